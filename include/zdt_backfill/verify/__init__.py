"""Verification: checksums of the expected projection against the target (:mod:`.checksum`), the
seed's checklist (:mod:`.checklist`) and staging/production parity (:mod:`.parity`)."""
