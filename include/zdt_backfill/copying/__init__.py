"""The copy: key-range partitions and keyset chunks (:mod:`.chunker`), the batch loop of one partition
(:mod:`.copier`), the repair of named keys (:mod:`.repair`) and the progress lines (:mod:`.progress`)."""
