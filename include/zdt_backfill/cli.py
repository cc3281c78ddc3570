"""``zdt-backfill``: the engine from a shell, without Airflow.

::

    zdt-backfill --version
    zdt-backfill plan --url postgresql://user:pw@host:5432/db --conf conf.json [--schema S] [--json]
    zdt-backfill dry-run --url URL --conf conf.json [--output explain_plan.json]
    zdt-backfill parity --staging-url URL --production-url URL --table T [--table T2] [--json]
    zdt-backfill run --url URL --conf conf.json [--replica-url URL ...] [--flag-store-url URL] [--reports-dir DIR]
    python -m zdt_backfill plan ...

``plan`` runs pre-flight's read-only checks (:func:`zdt_backfill.lifecycle.preflight.inspect`) in one
session that is rolled back, and prints every check and the planned partitions. It writes
nothing: no control table, no run lock, no checkpoint. The conf is the DAG's conf JSON (see
the README's conf reference); its ``conn_id`` is not needed (``--url`` names the database),
and its ``replica_conn_ids`` name Airflow connections, which the CLI cannot open, so replica
lag is not probed.

Exit codes: 0 every fatal check passed; 1 a fatal check failed or the database could not be
queried; 2 bad arguments or an invalid conf.

The engine never imports Airflow, and neither does this module.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

from .redact import mask_url

DISTRIBUTION = "zero-downtime-backfill"
URL_ENV = "ZDT_BACKFILL_URL"

EPILOG = """\
exit codes: 0 ok, 1 pre-flight failed, a critical symptom or a database error, 2 bad arguments
"""


class UsageError(Exception):
    """Bad command-line input (exit code 2)."""


def database(url: str, flag: str, schema: str | None = None, timeout_s: float | None = None) -> Any:
    """The :class:`~zdt_backfill.db.Database` of a ``postgresql://`` or ``mysql://`` (``mariadb://``)
    URL, named by the URL with its password masked.

    :raises UsageError: any other scheme (exit code 2).
    """
    from .db import Database

    try:
        db = Database.from_url(url, schema=schema, timeout_s=timeout_s)
    except ValueError:
        scheme = urlsplit(url).scheme
        raise UsageError(f"{flag} must start with postgresql:// or mysql://, got {scheme or 'no scheme'}://") from None
    db.name = mask_url(url)
    return db


def version() -> str:
    """The installed distribution's version, else the package's own."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that is not installed
        from . import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zdt-backfill",
        description="Zero-downtime backfill engine (PostgreSQL, MySQL/MariaDB) without Airflow.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    plan = sub.add_parser(
        "plan",
        help="read-only pre-flight: print every check and the planned partitions; writes nothing",
        description="Run pre-flight's read-only checks against a database and print the planned "
        "partitions. Nothing is written: no control table, no run lock, no checkpoint.",
        epilog="exit codes: 0 every fatal check passed, 1 a fatal check failed or database error, "
        "2 bad arguments or invalid conf",
    )
    plan.add_argument(
        "--url",
        default=os.environ.get(URL_ENV),
        help="postgresql://user:password@host:port/database or mysql://user:password@host:port/database "
        f"(default: ${URL_ENV}, which keeps the password off the command line)",
    )
    plan.add_argument(
        "--schema",
        help="PostgreSQL schema / MySQL database of the tables; overrides the conf's schema "
        "(default: the conf's, else the connection's default)",
    )
    plan.add_argument(
        "--conf",
        required=True,
        help="the DAG run's conf: a JSON file, '-' for standard input, or an inline JSON object",
    )
    plan.add_argument("--json", action="store_true", help="print the plan as one JSON document")
    plan.add_argument("-v", "--verbose", action="store_true", help="log the engine's steps to standard error")
    plan.set_defaults(func=cmd_plan)
    dry = sub.add_parser(
        "dry-run",
        help="EXPLAIN of each partition's first batch statement (full scans flagged), partition and "
        "batch boundaries and an estimated duration, as JSON; writes nothing",
        description="Pre-flight, then EXPLAIN the real batch statement of each partition's first batch "
        "(flagging a full scan; on MySQL also without its FORCE INDEX hint), list the partition and "
        "first batch boundaries and estimate the duration at the profile's rate. Every statement runs "
        "in one session that is rolled back: nothing is written.",
        epilog="exit codes: 0 dry run done, 1 a fatal check failed or database error, "
        "2 bad arguments or invalid conf",
    )
    dry.add_argument("--url", default=os.environ.get(URL_ENV),
                     help=f"the database, as for plan (default: ${URL_ENV})")
    dry.add_argument("--schema", help="PostgreSQL schema / MySQL database of the tables (overrides the conf's)")
    dry.add_argument("--conf", required=True,
                     help="the DAG run's conf: a JSON file, '-' for standard input, or an inline JSON object")
    dry.add_argument("--source-table", help="overrides the conf's source_table (the table to backfill)")
    dry.add_argument("--batch-size", type=int, help="overrides the conf's batch_size")
    dry.add_argument("--profile", help="overrides the conf's profile (dev, staging, prod)")
    dry.add_argument("--batches", type=int, default=3, help="batch boundaries listed per partition (default 3)")
    dry.add_argument("--output", help="write the JSON to this file (default: standard output)")
    dry.add_argument("-v", "--verbose", action="store_true", help="log the engine's steps to standard error")
    dry.set_defaults(func=cmd_dry_run)
    diag = sub.add_parser(
        "diagnose",
        help="the seed's symptom queries with verdicts: lock waits, replication lag, row-lock "
        "contention, connection counts, the backfill's own sessions; writes nothing",
        epilog="exit codes: 0 no critical finding, 1 a critical finding or database error, 2 bad arguments",
    )
    diag.add_argument("--url", default=os.environ.get(URL_ENV),
                      help=f"the primary (default: ${URL_ENV})")
    diag.add_argument("--replica-url", action="append", default=[], help="a replica (repeatable)")
    diag.add_argument("--json", action="store_true", help="print the findings as JSON")
    diag.add_argument("-v", "--verbose", action="store_true", help="log the engine's steps to standard error")
    diag.set_defaults(func=cmd_diagnose)
    par = sub.add_parser(
        "parity",
        help="environment parity: server version, the settings that matter and the tables' schema "
        "and indexes, staging against production; writes nothing",
        description="Compare staging and production: server flavour and version, lock and statement "
        "timeouts, buffer sizes, wal_level/binlog_format, sql_mode, isolation, max_connections, and the "
        "columns and indexes of each --table. Read-only.",
        epilog="exit codes: 0 no fatal difference, 1 a fatal difference or database error, 2 bad arguments",
    )
    par.add_argument("--staging-url", required=True, help="the staging database (postgresql:// or mysql://)")
    par.add_argument("--production-url", required=True, help="the production database")
    par.add_argument("--schema", help="PostgreSQL schema / MySQL database of the tables (default: the connection's)")
    par.add_argument("--table", action="append", required=True, help="a table involved (repeatable)")
    par.add_argument("--json", action="store_true", help="print the report as one JSON document")
    par.add_argument("-v", "--verbose", action="store_true", help="log the engine's steps to standard error")
    par.set_defaults(func=cmd_parity)
    run = sub.add_parser(
        "run",
        help="the whole lifecycle without Airflow: pre-flight, dual-write, copy, catch-up, validation, "
        "repair, decision, contract or rollback, report",
        description="Walk the whole backfill lifecycle in this process (the engine's Runner.run): the same "
        "steps, checks, throttles and state table as the DAG, partitions one after the other. No human "
        "answers here: a decision that needs one is answered 'hold' (the run halts, nothing destroyed), so "
        "contract or rollback happen only with approval 'auto'. Routing flags go to the table "
        "zdt_routing_flags (flag_store 'table') or --flag-store-url (flag_store 'http').",
        epilog="exit codes: 0 contracted, 1 anything else (rolled back, held, halted, failed; the report "
        "says why), 2 bad arguments or an invalid conf",
    )
    run.add_argument("--url", default=os.environ.get(URL_ENV), help=f"the primary (default: ${URL_ENV})")
    run.add_argument("--conf", required=True,
                     help="the DAG run's conf: a JSON file, '-' for standard input, or an inline JSON object")
    run.add_argument("--replica-url", action="append", default=[],
                     help="a replica whose lag gates the copy (repeatable; replaces the conf's replica_conn_ids)")
    run.add_argument("--schema", help="PostgreSQL schema / MySQL database of the tables (overrides the conf's)")
    run.add_argument("--run-id", default=None, help="the run's id (default: cli-<UTC timestamp>)")
    run.add_argument("--reports-dir", default="backfill_reports", help="where the local copy of the report goes")
    run.add_argument("--json", action="store_true", help="print the report as one JSON document")
    run.add_argument("-v", "--verbose", action="store_true", help="log the engine's steps to standard error")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zdt-backfill`` and ``python -m zdt_backfill``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.CRITICAL,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from .errors import ConfigError

    try:
        return args.func(args)
    except (UsageError, ConfigError) as exc:
        print(f"{parser.prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------- plan
def cmd_plan(args: argparse.Namespace) -> int:
    from .config import RunConfig
    from .errors import PreflightError
    from .keys import resolve_key
    from .lifecycle.preflight import inspect

    if not args.url:
        raise UsageError(f"--url is required (or set ${URL_ENV})")
    params = read_conf(args.conf)
    params.setdefault("conn_id", "cli")  # names an Airflow connection; --url replaces it here
    if args.schema is not None:
        params["schema"] = args.schema
    params["dry_run"] = True  # read-only: the prod policy's refusals are listed, not raised
    config = RunConfig.from_params(params, run_id="cli-plan")
    for problem in config.policy_problems():
        print(f"zdt-backfill plan: a real run would be refused: {problem}", file=sys.stderr)
    db = database(args.url, "--url", schema=config.schema)

    try:
        db.ensure_flavour()
        config = resolve_key(config, db)  # the primary key when the conf names none
        with db.session() as conn:  # rolled back and closed on exit: pre-flight's reads only
            plan = inspect(config, db, conn, probes=[])
    except PreflightError as exc:
        print(f"zdt-backfill plan: {one_line(exc)} (nothing was written; -v logs every check)", file=sys.stderr)
        return 1
    except Exception as exc:  # cannot connect, permission denied, ...
        if args.verbose:
            logging.getLogger(__name__).exception("plan failed")
        print(f"zdt-backfill plan: error: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
        return 1

    if args.json:
        print(json.dumps({"config": config.to_dict(), "plan": plan.to_dict()}, default=str, indent=2))
        return 0
    print_plan(config, plan, db.name)
    return 0


def cmd_dry_run(args: argparse.Namespace) -> int:
    from .config import RunConfig
    from .errors import PreflightError
    from .lifecycle.dryrun import dry_run

    if not args.url:
        raise UsageError(f"--url is required (or set ${URL_ENV})")
    params = read_conf(args.conf)
    params.setdefault("conn_id", "cli")
    for field, value in (("schema", args.schema), ("source_table", args.source_table),
                         ("batch_size", args.batch_size), ("profile", args.profile)):
        if value is not None:
            params[field] = value
    if args.batches < 1:
        raise UsageError("--batches must be 1 or more")
    params["dry_run"] = True  # writes nothing: the prod policy's refusals are listed in the output
    config = RunConfig.from_params(params, run_id="cli-dry-run")
    db = database(args.url, "--url", schema=config.schema)
    try:
        result = dry_run(config, db, first_batches=args.batches)
    except PreflightError as exc:
        print(f"zdt-backfill dry-run: {one_line(exc)} (nothing was written; -v logs every check)", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.verbose:
            logging.getLogger(__name__).exception("dry run failed")
        print(f"zdt-backfill dry-run: error: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
        return 1
    doc = json.dumps(result, default=str, indent=2)
    if not args.output:
        print(doc)
        return 0
    try:
        Path(args.output).write_text(doc + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write --output {args.output}: {exc.strerror or exc}") from None
    est = result["estimate"]
    flag = (f"FULL SCAN in partition(s) {result['full_scan_partitions']}" if result["full_scan"]
            else "no full scan")
    print(f"dry run of {config.source_table} on {db.name}: {len(result['partitions'])} partition(s), "
          f"{flag}, {est['text']}; wrote {args.output} (nothing written to the database)")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from .signals.diagnose import CRITICAL, diagnose

    if not args.url:
        raise UsageError(f"--url is required (or set ${URL_ENV})")
    db = database(args.url, "--url", timeout_s=10)
    replicas = [database(url, "--replica-url", timeout_s=5) for url in args.replica_url]
    try:
        findings = diagnose(db, replicas)
    except Exception as exc:
        print(f"zdt-backfill diagnose: error: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([f.to_dict() for f in findings], default=str, indent=2))
    else:
        print(f"diagnose {db.name}")
        for f in findings:
            print("  " + f.line())
    return 1 if any(f.verdict == CRITICAL for f in findings) else 0


def cmd_parity(args: argparse.Namespace) -> int:
    from .identifiers import validate_identifier
    from .verify.parity import compare

    dbs = []
    for flag, url in (("--staging-url", args.staging_url), ("--production-url", args.production_url)):
        dbs.append(database(url, flag, schema=args.schema, timeout_s=10))
    tables = [validate_identifier(t, "--table") for t in args.table]  # ConfigError: exit 2
    try:
        report = compare(dbs[0], dbs[1], tables)
    except Exception as exc:
        if args.verbose:
            logging.getLogger(__name__).exception("parity failed")
        print(f"zdt-backfill parity: error: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), default=str, indent=2))
    else:
        print(f"parity of staging {report.staging} and production {report.production}, tables {tables}"
              " (read-only: nothing was written)")
        for d in report.differences:
            print("  " + d.line())
        print(f"{len(report.fatal)} fatal, {len(report.warnings)} warning(s)"
              if report.differences else "no difference")
    return 0 if report.ok else 1


def print_plan(config: Any, plan: Any, where: str) -> None:
    c = config
    target = c.target_table if c.mode == "copy" else f"{c.source_table} (fill)"
    print(f"pre-flight of {c.source_table} -> {target} on {where} (read-only: nothing was written)")
    for check in plan.checks:
        status = "ok" if check.ok else ("FAIL" if check.fatal else "WARN")
        print(f"  {status:<4}  {check.name:<20} {check.detail}")
    if c.replica_conn_ids:
        print(f"  note  replica_conn_ids {list(c.replica_conn_ids)} are Airflow connections: lag not probed here")
    keys = "no keys (empty source)" if plan.min_key is None else f"keys {plan.min_key}..{plan.max_key}"
    print(
        f"plan: {plan.engine}, key index {plan.key_index}, {keys}, ~{plan.rows_estimate:,} rows;"
        f" profile {c.profile.name}, batch {c.batch_size:,} rows, "
        + ("unthrottled" if c.max_rows_per_second is None else f"{c.max_rows_per_second:g} rows/s")
    )
    print(f"partitions: {len(plan.partitions)}")
    for p in plan.partitions:
        print(f"  p{p['index']}  [{p['lo']}..{p['hi']}]  {p['hi'] - p['lo'] + 1:,} keys")


# ---------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    import time

    from .config import RunConfig
    from .lifecycle import Runner
    from .routing.flags import flag_store_from_config
    from .signals.lag import PROBE_TIMEOUT_SECONDS, ReplicaLagProbe

    if not args.url:
        raise UsageError(f"--url is required (or set ${URL_ENV})")
    params = read_conf(args.conf)
    params.setdefault("conn_id", "cli")  # names an Airflow connection; --url replaces it here
    params["replica_conn_ids"] = [mask_url(u) for u in args.replica_url]  # names, for the report
    named = [f for f in ("flag_store_conn_id", "error_signal_conn_id", "cache_conn_id") if params.get(f)]
    if named:
        raise UsageError(f"{', '.join(named)} name Airflow connections, which zdt-backfill run does not read: "
                         "give the matching *_url fields instead")
    if args.schema is not None:
        params["schema"] = args.schema
    if params.get("flag_store") == "variable":
        raise UsageError("flag_store 'variable' is an Airflow Variable: use 'table' or 'http' outside Airflow")
    run_id = args.run_id or time.strftime("cli-%Y%m%dT%H%M%SZ", time.gmtime())
    config = RunConfig.from_params(params, run_id=run_id)
    db = database(args.url, "--url", schema=config.schema)
    replicas = [database(u, "--replica-url", schema=config.schema, timeout_s=PROBE_TIMEOUT_SECONDS)
                for u in args.replica_url]
    runner = Runner(config, db, owner="zdt-backfill run",
                    flag_store=flag_store_from_config(config.flag_store, db, config.flag_store_url),
                    replica=replicas[0] if replicas else None)
    runner.probes = [ReplicaLagProbe(r, runner.heartbeat_name) for r in replicas]
    try:
        out = runner.run(Path(args.reports_dir))
    finally:
        for probe in runner.probes:
            probe.close()
    if out.get("dry_run") is not None:
        print(json.dumps(out["dry_run"], default=str, indent=2))
        return 0
    if out.get("report") is None:
        print(f"zdt-backfill run: {out.get('error') or out['ending']['reason']} (nothing was written)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(out["report"], default=str, indent=2))
    else:
        print(out["summary"])
        print(f"report: {out['where']}; local copy: {out['dir']}")
    if out.get("error"):
        print(f"zdt-backfill run: stopped: {out['error']}", file=sys.stderr)
    return 0 if out["ending"]["success"] else 1


# ---------------------------------------------------------------------- helpers
def read_conf(value: str) -> dict[str, Any]:
    """The conf from a file, standard input (``-``) or an inline JSON object."""
    if value == "-":
        text, origin = sys.stdin.read(), "standard input"
    elif value.lstrip().startswith(("{", "[")):  # inline JSON (an array is refused below)
        text, origin = value, "--conf"
    else:
        path = Path(value)
        try:
            text, origin = path.read_text(), str(path)
        except OSError as exc:
            raise UsageError(f"cannot read --conf {value}: {exc.strerror or exc}") from None
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{origin} is not valid JSON: {exc}") from None
    if not isinstance(conf, dict):
        raise UsageError(f"{origin} must hold a JSON object (the DAG run's conf), not {type(conf).__name__}")
    return conf


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
