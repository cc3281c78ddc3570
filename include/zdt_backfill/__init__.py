"""Zero-downtime backfill engine.

Plain Python with no Airflow import (a test enforces it), so the same engine runs
from the Airflow layer in ``plugins/zdt_airflow``, from a CLI, or from a test.

Roles, one module each (the vocabulary of gh-ost, Spirit and pgroll):

- :mod:`.config`     one validated :class:`RunConfig` per run, built from Params/conf
- :mod:`.identifiers` identifier validation; quoting is done by SQLAlchemy's dialects
- :mod:`.dialects`   per-engine SQL builders (pure functions, unit-tested without a database)
- :mod:`.db`         a DB-API connection factory plus its dialect and session settings
- :mod:`.chunker`    key-range partitions and keyset chunks (a :class:`Chunker` interface)
- :mod:`.checkpoint` the checkpoint and run-lock tables in the target database
- :mod:`.throttler`  rows/s pacing and the replica-lag gate; :func:`decide` is pure
- :mod:`.lag`        replica lag probes
- :mod:`.copier`     the batch loop of one partition (one transaction per batch)
- :mod:`.preflight`  read-only checks before anything is written
- :mod:`.dualwrite`  dual-write confirmation
- :mod:`.checksum`   in-database checksums of source projection vs target, per partition
- :mod:`.decision`   forward (contract) or rollback, on the seed's thresholds
- :mod:`.contract`, :mod:`.rollback`  the two ends of expand/contract
- :mod:`.report`     the run report (JSON + Markdown)
- :mod:`.cli`        ``zdt-backfill`` / ``python -m zdt_backfill``: read-only ``plan``
"""

__version__ = "0.2.0"
