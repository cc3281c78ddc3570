"""Zero-downtime backfill engine.

Plain Python with no Airflow import (a test enforces it), so the same engine runs
from the Airflow layer in ``plugins/zdt_airflow``, from a CLI, or from a test.

Rooms, one package each (the vocabulary of gh-ost, Spirit and pgroll; ARCHITECTURE.md
says what each owns and how a batch travels through them):

- :mod:`.config`, :mod:`.identifiers`, :mod:`.expressions`  one validated ``RunConfig`` per
  run; identifier and expression guards
- :mod:`.db`          a DB-API connection factory plus its dialect and session settings
- :mod:`.dialects`    every engine difference: SQL, errors, EXPLAIN reading, introspection
- :mod:`.state`       the run's state machine and lease (``runstate``), checkpoints
- :mod:`.signals`     replica lag, heartbeat, load, critical load, error-rate signals, the throttler
- :mod:`.copying`        keyset chunker, the batch loop of a partition, repair, progress lines
- :mod:`.verify`      checksums, the seed's checklist, environment parity
- :mod:`.routing`     the routing flags and the 1 % read ramp
- :mod:`.lifecycle`   pre-flight, dual-write, decision, contract, rollback, dry run: the steps
- :mod:`.report`      the run report (JSON, Markdown, HTML with charts)
- :mod:`.cli`         ``zdt-backfill`` / ``python -m zdt_backfill``
"""

__version__ = "0.2.0"
