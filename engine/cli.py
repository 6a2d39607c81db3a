"""``scriptvisor``: a thin click layer over the Python API.

Exit status: 0 ok, 1 the invocation (or a check) failed, 2 bad usage
(missing file, bad option, unreadable input).  Bad input never produces a
traceback: it produces a message naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import click

from .config import EngineConfig, TenantLimits
from .errors import BadRequest, InvocationError
from .result import Result, public

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def parse_arg(text: str) -> Any:
    """An ARG is JSON when it parses as JSON, else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_config(pairs: Iterable[str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--config")
        config[key] = parse_arg(value)
    return config


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=False)


def summary(result: dict[str, Any]) -> str:
    """The readable form of a result (``run`` and ``connection`` without ``--json``)."""
    lines = []
    if result["ok"]:
        lines.append(f"ok ({result['duration_ms']:.1f} ms)")
        lines.append(f"result: {_dump(result['result'])}")
    else:
        err = result.get("error") or {}
        lines.append(f"failed: {err.get('code')} ({result['duration_ms']:.1f} ms)")
        lines.append(f"{err.get('name')}: {err.get('message')}")
        extra = {k: v for k, v in err.items() if k not in ("code", "name", "message", "traceback")}
        if extra:
            lines.append(f"details: {_dump(extra)}")
        for fr in err.get("traceback") or []:
            lines.append(f'  File "{fr.get("file")}", line {fr.get("line")}, in {fr.get("function")}')
    if "scripts_called" in result:  # a connection operation
        lines.append(f"scripts called: {', '.join(result['scripts_called']) or 'none'}")
    if "from_platform_store" in result:
        lines.append(f"from platform store: {'yes' if result['from_platform_store'] else 'no'}")
    for line in result.get("logs") or []:
        lines.append(f"log: {line}")
    return "\n".join(lines)


def _engine_config(timeout: float | None, spares: int = 0) -> EngineConfig:
    limits = TenantLimits() if timeout is None else TenantLimits(timeout=timeout)
    # A one-shot run keeps no spare (nothing follows the last call); a batch
    # keeps one so the line after a timeout does not wait for a fork.
    return EngineConfig(limits=limits, spares_per_tenant=spares)


def _check_tenant_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from .names import tenant_name_problem

    problem = tenant_name_problem(value)
    if problem is not None:
        raise click.BadParameter(problem)
    return value


class _Group(click.Group):
    """A group whose command list shows each command's whole first sentence.

    click cuts the list's descriptions at 45 characters ("Run one custom
    database OPERATION (login, signup, get_user,..."), which hides what the
    command is for.
    """

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class _ConnectionCommand(click.Command):
    """``connection --help`` lists every operation with its arguments (read lazily)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from .connections import ARGUMENTS

        with formatter.section("Operations and their ARGS"):
            formatter.write_dl([(op, " ".join(a.upper() for a in args)) for op, args in ARGUMENTS.items()])
        formatter.write_paragraph()
        formatter.write_text("USER (signup) is a JSON object, e.g. '{\"email\": \"a@example.com\", "
                             "\"password\": \"s3cret\"}'; VERIFIED is true or false.")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(None, "-V", "--version", package_name="scriptvisor", prog_name="scriptvisor")
def main() -> None:
    """Sandboxed execution of tenant action scripts."""


@main.command(context_settings={"ignore_unknown_options": False})
@click.argument("script", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("args", nargs=-1)
@click.option("--fn", "function", help="Function to call (default: the file's stem).")
@click.option("--tenant", default="local", show_default=True, callback=_check_tenant_name,
              help="Tenant the worker is bound to (lowercase letters, digits, '-', '_').")
@click.option("--tenant-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Run DIR/scripts/SCRIPT.py as that tenant: its tenant.toml configuration, data "
                   "directory, egress and limits (SCRIPT is then a name, e.g. login).")
@click.option("--config", "config_pairs", multiple=True, metavar="KEY=VALUE",
              help="A configuration value (JSON when it parses, else a string). Repeatable.")
@click.option("--timeout", type=click.FloatRange(min=0.001), help="Wall clock per call, seconds.")
@click.option("--batch", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON lines file: one JSON array of arguments per call, run in order.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per call.")
@click.pass_context
def run(ctx: click.Context, script: Path, args: tuple[str, ...], function: str | None, tenant: str,
        tenant_dir: Path | None, config_pairs: tuple[str, ...], timeout: float | None, batch: Path | None,
        as_json: bool) -> None:
    """Run SCRIPT with ARGs (callback is appended) on the sandbox engine.

    With --tenant-dir DIR, SCRIPT names a script of that tenant folder and runs
    with everything the server would give it (the local "Try" button).
    """
    from .api import Engine, load_script

    configuration = parse_config(config_pairs)
    settings: dict[str, Any] | None = None
    if tenant_dir is not None:
        if ctx.get_parameter_source("tenant") is not click.core.ParameterSource.DEFAULT:
            raise click.UsageError("--tenant-dir names the tenant (its folder name): drop --tenant")
        script, tenant, base_config, settings = _tenant_script(tenant_dir, script)
        configuration = {**base_config, **configuration}  # --config overrides for a try-out
        if timeout is not None:
            settings["limits"] = dataclasses.replace(settings["limits"], timeout=timeout)
    try:
        source = load_script(script)
    except InvocationError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(EXIT_USAGE)
    calls: list[Any]
    if batch is not None:
        if args:
            raise click.UsageError("give ARGs or --batch, not both")
        try:
            lines = batch.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            click.echo(f"error: cannot read batch file {batch}: {exc.strerror}", err=True)
            sys.exit(EXIT_USAGE)
        except UnicodeDecodeError as exc:
            click.echo(f"error: batch file {batch} is not UTF-8: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        calls = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                calls.append(BadRequest(f"line {n}: not valid JSON ({exc.msg})", line=n))
                continue
            if not isinstance(value, list):
                calls.append(BadRequest(f"line {n}: expected a JSON array of arguments", line=n))
                continue
            calls.append(value)
    else:
        calls = [[parse_arg(a) for a in args]]

    failed = False
    try:
        spares = 1 if batch is not None else 0
        cfg = (_engine_config(timeout, spares) if settings is None
               else EngineConfig(limits=settings["limits"], spares_per_tenant=spares,
                                 zygote_extras=_zygote_extras(settings)))
        with Engine(cfg) as eng:
            if settings is not None:
                eng.configure_tenant(tenant, **settings)
            if batch is not None:
                # The lines run one at a time, in order (one call at a time:
                # concurrency 1), each with its whole timeout from its own
                # start; all are queued at once so the engine can hand a
                # short script's next call to the worker with the result of
                # the previous one (pipelining) instead of a round trip later.
                limits = settings["limits"] if settings is not None else cfg.limits
                eng.configure_tenant(tenant, **dict(settings or {}, limits=dataclasses.replace(
                    limits, max_concurrency=1, max_queue=max(limits.max_queue, len(calls)))))
            pending = [call if isinstance(call, InvocationError) else
                       eng.submit(tenant, path=str(script), source=source, function=function, args=call,
                                  configuration=configuration, timeout_starts="start")
                       for call in calls]
            for item in pending:
                res = Result.failure(item) if isinstance(item, InvocationError) else eng.wait(item)
                failed = failed or not res.ok
                click.echo(_dump(res.to_dict()) if as_json else summary(res.to_dict()))
    except ValueError as exc:  # a bad tenant name, a non-JSON value
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except InvocationError as exc:
        click.echo(_dump(Result.failure(exc).to_dict()) if as_json else f"error: {exc.message}")
        sys.exit(EXIT_FAILED)
    if failed and tenant_dir is None:
        folder = _owning_tenant_folder(script)
        if folder is not None:
            click.echo(f"hint: {script} belongs to the tenant folder {folder}; run it with its configuration, "
                       f"data directory and egress: {_self_command()} run --tenant-dir {folder} {script.stem} ...",
                       err=True)
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


def _self_command() -> str:
    """How to call this CLI again from the current shell, for hints.

    After the Quickstart ``scriptvisor`` lives in ``.venv/bin`` and is not on
    PATH, so a hint saying plain ``scriptvisor`` would fail as printed.
    """
    import shutil

    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "scriptvisor":
        candidate = argv0
    else:  # python -m scriptvisor.engine.cli, or called in-process (tests)
        candidate = os.path.join(os.path.dirname(sys.executable), "scriptvisor")
        if not os.path.exists(candidate):
            return f"{sys.executable} -m scriptvisor.engine.cli"
    on_path = shutil.which("scriptvisor")
    if on_path and Path(on_path).resolve() == Path(candidate).resolve():
        return "scriptvisor"
    shown = Path(os.path.abspath(candidate))  # as typed (a symlinked .venv stays .venv)
    try:
        return str(shown.relative_to(os.path.abspath(os.getcwd())))
    except ValueError:
        return str(shown)


def _zygote_extras(settings: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    """The tenant's zygote (its drivers, its HTTP client), started beside the slim one."""
    from scriptvisor.sandbox.wire import extras_for

    extras = extras_for((d.driver for d in settings.get("databases") or ()), http=bool(settings.get("http")))
    return (extras,) if extras else ()


def _tenant_script(tenant_dir: Path, script: Path) -> tuple[Path, str, dict[str, Any], dict[str, Any]]:
    """(script path, tenant name, configuration, engine settings) for ``run --tenant-dir``."""
    from .tenants import SCRIPT_NAME, TenantConfigError, load_tenant

    try:
        t = load_tenant(tenant_dir)
    except TenantConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    name = script.name[:-3] if script.name.endswith(".py") else script.name
    if script.parent != Path(".") and script.parent.resolve() != t.scripts_dir.resolve():
        raise click.UsageError(f"with --tenant-dir, SCRIPT is the name of a script in {t.scripts_dir} "
                               f"(e.g. {name}), not a path elsewhere")
    path = t.script_path(name)
    if path is None:
        have = sorted(p.stem for p in t.scripts_dir.glob("*.py"))
        why = "" if SCRIPT_NAME.match(name) else " (script names are Python identifiers)"
        raise click.UsageError(f"tenant {t.name!r} has no script {name!r}{why}; its scripts: "
                               f"{', '.join(have) or 'none'}")
    return path, t.name, dict(t.configuration), t.engine_settings()


def _owning_tenant_folder(script: Path) -> Path | None:
    """The tenant folder a script file lives in (``DIR/scripts/x.py`` with ``DIR/tenant.toml``)."""
    parent = script.resolve().parent
    if parent.name == "scripts" and (parent.parent / "tenant.toml").is_file():
        try:
            return parent.parent.relative_to(Path.cwd())
        except ValueError:
            return parent.parent
    return None


@main.command()
@click.argument("scripts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--fn", "function", help="The function each SCRIPT must define (default: the file's stem, "
                                       "what run and the server call).")
def check(scripts: tuple[Path, ...], function: str | None) -> None:
    """Compile SCRIPTs under the sandbox policy; print each problem as file:line:col."""
    from .api import load_script
    from .checker import check_sources

    problems = 0
    for path in scripts:  # reported in argument order
        try:
            reports = check_sources([(str(path), load_script(path))], function=function)
        except InvocationError as exc:
            reports = [(str(path), [{"line": 0, "column": 0, "message": exc.message}])]
        for shown, issues in reports:
            for issue in issues:
                click.echo(f"{shown}:{issue['line']}:{issue['column']}: {issue['message']}")
                problems += 1
    if problems:
        click.echo(f"{problems} problem(s) found", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"{len(scripts)} script(s) ok", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the layers as a JSON object.")
@click.option("--strict", is_flag=True, help="Exit 1 unless every layer is active.")
@click.option("--tenants", "tenants_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Also list what each tenant under this folder may connect to (declared endpoints, resolved now).")
def doctor(as_json: bool, strict: bool, tenants_dir: Path | None) -> None:
    """Report each OS confinement layer: active on this host, or why not."""
    from .doctor import egress, egress_text, layers, run_doctor

    tenants = egress(tenants_dir) if tenants_dir is not None else None
    if as_json:
        rows = layers(None)
        out: dict[str, Any] = {"layers": rows, "all_active": all(r["active"] for r in rows)}
        if tenants is not None:
            out["tenants"] = tenants
        click.echo(_dump(out))
        all_active = all(r["active"] for r in rows)
    else:
        text, all_active = run_doctor(None)
        click.echo(text + (egress_text(tenants) if tenants is not None else ""))
    if strict and not all_active:
        sys.exit(EXIT_FAILED)



def _env(name: str) -> dict[str, Any]:
    """click keywords for a ``serve`` option settable from ``SCRIPTVISOR_<NAME>``."""
    return {"envvar": f"SCRIPTVISOR_{name}", "show_envvar": True}


@main.command()
@click.option("--tenants", "tenants_dir", type=click.Path(file_okay=False, path_type=Path), **_env("TENANTS"),
              help="Tenants folder (TENANTS/<tenant>/tenant.toml). Default: the bundled example.")
@click.option("--host", default="127.0.0.1", show_default=True, **_env("HOST"), help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), **_env("PORT"),
              help="TCP port (0: any free port; the chosen one is printed).")
@click.option("--log-file", type=click.Path(dir_okay=False), **_env("LOG_FILE"),
              help="Operator JSON log (default: stderr).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, **_env("LOG_LEVEL"), help="Lowest level written to the operator log.")
@click.option("--max-body", type=click.IntRange(min=1024), default=1024 * 1024, show_default=True,
              **_env("MAX_BODY"), help="Largest request body, bytes (413 above).")
@click.option("--sse-heartbeat", type=click.FloatRange(min=0.05), default=15.0, show_default=True,
              **_env("SSE_HEARTBEAT"), help="Seconds without events before a log stream gets a heartbeat comment.")
@click.option("--max-subscribers", type=click.IntRange(min=1), default=8, show_default=True,
              **_env("MAX_SUBSCRIBERS"), help="Open log streams per tenant (429 above).")
@click.option("--sse-buffer", type=click.IntRange(min=65536), default=1024 * 1024, show_default=True,
              **_env("SSE_BUFFER"), help="Bytes waiting for one log stream before that slow reader is dropped.")
@click.option("--end-user-responses", is_flag=True, **_env("END_USER_RESPONSES"),
              help="Connection results omit operator-only error fields (user_known, email_or_id, "
                   "other users' ids in a contract violation): for responses that reach end users.")
@click.option("--state-dir", type=click.Path(file_okay=False), **_env("STATE_DIR"),
              help="This server's engine state (scratch); default: one per host:port, locked while it runs.")
@click.option("--header-timeout", type=click.FloatRange(0, 3600, min_open=True, max_open=True), default=10.0,
              show_default=True, **_env("HEADER_TIMEOUT"),
              help="Seconds for a request's line and headers; then the connection is closed.")
@click.option("--body-timeout", type=click.FloatRange(0, 3600, min_open=True, max_open=True), default=10.0,
              show_default=True, **_env("BODY_TIMEOUT"), help="Seconds for a request body; then 408 request_timeout.")
@click.option("--max-connections", type=click.IntRange(1), default=1024, show_default=True,
              **_env("MAX_CONNECTIONS"), help="Open connections accepted; one more gets 503 too_many_connections.")
def serve(tenants_dir: Path | None, host: str, port: int, log_file: str | None, log_level: str,
          max_body: int, sse_heartbeat: float, max_subscribers: int, sse_buffer: int,
          end_user_responses: bool, state_dir: str | None, header_timeout: float, body_timeout: float,
          max_connections: int) -> None:
    """Run the operator HTTP API until SIGTERM/SIGINT (then drain and exit 0).

    Every option can also come from the environment variable shown beside it;
    the admin token from SCRIPTVISOR_ADMIN_TOKEN (or SCRIPTVISOR_ADMIN_TOKEN_HASH).
    """
    from .server.edge import EdgeLimits
    from .server.run import serve as run_server
    from .server.statedir import StateDirBusy
    from .tenants import TenantConfigError

    edge = EdgeLimits(header_timeout=header_timeout, body_timeout=body_timeout, max_connections=max_connections)
    try:
        code = run_server(tenants_dir, host, port, log_file=log_file, log_level=log_level, max_body=max_body,
                          sse_heartbeat=sse_heartbeat, max_subscribers=max_subscribers,
                          subscriber_buffer=sse_buffer, end_user_responses=end_user_responses,
                          edge=edge, state_dir=state_dir)
    except (TenantConfigError, StateDirBusy) as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sys.exit(code)


@main.group(cls=_Group)
def token() -> None:
    """Manage tenants' API bearer tokens (only hashes are stored)."""


_TENANTS_OPTION = click.option(
    "--tenants", "tenants_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    envvar="SCRIPTVISOR_TENANTS", show_envvar=True, help="Tenants folder holding TENANT/tenant.toml.")


@token.command("create")
@click.argument("tenant")
@_TENANTS_OPTION
@click.option("--name", help="A label stored beside the hash (shown by `token list`).")
def token_create(tenant: str, tenants_dir: Path, name: str | None) -> None:
    """Print a new token for TENANT once; its hash is added to tenant.toml."""
    from .server.auth import create_token
    from .tenants import TenantConfigError

    try:
        click.echo(create_token(tenants_dir, tenant, name=name))
    except TenantConfigError as exc:
        raise click.UsageError(str(exc)) from None


@token.command("list")
@click.argument("tenant")
@_TENANTS_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def token_list(tenant: str, tenants_dir: Path, as_json: bool) -> None:
    """List TENANT's tokens: id (for revoke), label and creation time; never the token."""
    from .server.auth import list_tokens
    from .tenants import TenantConfigError

    try:
        rows = list_tokens(tenants_dir, tenant)
    except TenantConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(_dump(rows))
        return
    if not rows:
        click.echo(f"no tokens: create one with `scriptvisor token create {tenant} --tenants {tenants_dir}`")
        return
    click.echo(f"{'ID':<14}{'CREATED':<22}NAME")
    for row in rows:
        click.echo(f"{row['id']:<14}{row['created'] or '-':<22}{row['name'] or '-'}")


@token.command("revoke")
@click.argument("tenant")
@click.argument("token_id")
@_TENANTS_OPTION
def token_revoke(tenant: str, token_id: str, tenants_dir: Path) -> None:
    """Remove the token TOKEN_ID (from `token list`, 8+ hex digits) from TENANT.

    A running server refuses it from the next request on.
    """
    from .server.auth import revoke_token
    from .tenants import TenantConfigError

    try:
        row = revoke_token(tenants_dir, tenant, token_id)
    except TenantConfigError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"revoked token {row['id']} ({row['name'] or 'no label'}, created {row['created'] or 'unknown'})")


@main.command("tail")
@click.argument("tenant")
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, envvar="SCRIPTVISOR_URL",
              show_envvar=True, help="The server (or the load balancer in front of it).")
@click.option("--token", envvar="SCRIPTVISOR_TOKEN", show_envvar=True, required=True,
              help="The tenant's token (or the admin token).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event: {id, event, data}.")
@click.option("--once", is_flag=True, help="Exit when the stream ends instead of reconnecting.")
def tail(tenant: str, url: str, token: str, as_json: bool, once: bool) -> None:
    """Follow TENANT's invocations live (start, result, script logs), reconnecting with resume."""
    from .tail import follow

    try:
        code = follow(url, tenant, token, as_json=as_json, once=once)
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


@main.command("facades")
def facades() -> None:
    """Print the facade reference: every global, builtin and importable module a script can use."""
    from .facadedoc import generate

    click.echo(generate(), nl=False)


@main.command("init")
@click.argument("tenant_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--template", required=True, type=click.Choice(["sqlite", "postgres", "mysql", "webservice"]),
              help="Database (or legacy REST API: webservice) the seven action scripts are written for.")
@click.option("--import-users", is_flag=True, help="Automatic migration mode (import_users = true).")
@click.option("--secrets-dir", type=click.Path(file_okay=False, path_type=Path),
              help="postgres/mysql: where `db setup` will write the database password (default: "
                   "$SCRIPTVISOR_SECRETS_DIR, /etc/scriptvisor/secrets as root, else ~/.config/scriptvisor/secrets).")
def init(tenant_dir: Path, template: str, import_users: bool, secrets_dir: Path | None) -> None:
    """Create TENANT_DIR: scripts, tenant.toml, schema (and a seeded data/legacy.db for sqlite)."""
    from .tenantdir import InitError, init_tenant

    try:
        root = init_tenant(tenant_dir, template, import_users, secrets_dir=secrets_dir)
    except InitError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"created tenant folder {root} ({template}, import_users = {str(import_users).lower()})")
    if template == "webservice":
        click.echo(f"start the reference legacy API: {_self_command()} legacy-api --tenant-dir {root}")
    elif template in ("postgres", "mysql"):  # the declared database, its role and example users
        click.echo(f"create the legacy database once: {_self_command()} db setup --tenant-dir {root}")
    click.echo(f"try: {_self_command()} connection login --tenant-dir {root} alice@example.com wonderland")


@main.command("legacy-api")
@click.option("--tenant-dir", type=click.Path(file_okay=False, path_type=Path),
              help="A webservice tenant: serve on its [[http]] endpoint's port with its configuration's API_KEY.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535),
              help="TCP port (default: the tenant's endpoint port, else 8931; 0: any free port).")
@click.option("--api-key", help="The Bearer key clients must send (default: the tenant's API_KEY).")
@click.option("--test-routes", is_flag=True, help="Also serve /api/_reset, /api/_calls and the slow/big/redirect routes.")
def legacy_api(tenant_dir: Path | None, host: str, port: int | None, api_key: str | None,
               test_routes: bool) -> None:
    """Serve the reference legacy user API (for the webservice template) until interrupted.

    Seeded with alice@example.com / wonderland and bob@example.com / builder;
    the API is documented in templates/webservice/README.md.
    """
    from .legacy_api import DEFAULT_PORT, serve as serve_api
    from .tenants import TenantConfigError, load_tenant

    if tenant_dir is not None:
        try:
            tenant = load_tenant(tenant_dir)
        except TenantConfigError as exc:
            raise click.UsageError(str(exc)) from None
        if api_key is None:
            api_key = tenant.configuration.get("API_KEY")
        if port is None and tenant.http:
            port = tenant.http[0].port
    if not isinstance(api_key, str) or not api_key:
        raise click.UsageError("give --api-key, or --tenant-dir of a tenant whose configuration has API_KEY")
    try:
        serve_api(api_key, host=host, port=DEFAULT_PORT if port is None else port, test_routes=test_routes)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@main.group("db")
def db_group() -> None:
    """Legacy databases of PostgreSQL/MySQL tenants."""


@db_group.command("setup")
@click.option("--tenant-dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Tenant folder whose tenant.toml declares the database ([[databases]]).")
@click.option("--admin-dsn", help="Admin connection (default: postgresql://postgres@127.0.0.1:5432/postgres, "
                                  "mysql://root@127.0.0.1:3306/).")
def db_setup(tenant_dir: Path, admin_dsn: str | None) -> None:
    """Create the declared database, a least-privileged role with a generated password
    (written to its password_file), the schema and the example users."""
    from .dbsetup import SetupError, setup_tenant

    try:
        setup_tenant(tenant_dir, admin_dsn, echo=click.echo)
    except SetupError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)


@main.command("connection", cls=_ConnectionCommand, context_settings={"ignore_unknown_options": True})
@click.argument("operation")
@click.argument("args", nargs=-1)
@click.option("--tenant-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Tenant folder (tenant.toml, scripts/, data/).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def connection(operation: str, args: tuple[str, ...], tenant_dir: Path, as_json: bool) -> None:
    """Run one custom database OPERATION (login, signup, get_user, ...) with ARGS."""
    from .connections import parse_cli_args, run_operation
    from .tenants import TenantConfigError

    try:
        result = run_operation(tenant_dir, operation, parse_cli_args(operation, args))
    except BadRequest as exc:
        raise click.UsageError(exc.message) from None
    except TenantConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except InvocationError as exc:
        result = {**Result.failure(exc).to_dict(), "scripts_called": []}
    click.echo(_dump(public(result)) if as_json else summary(result))
    sys.exit(EXIT_OK if result["ok"] else EXIT_FAILED)


@main.group("script", cls=_Group)
def script_group() -> None:
    """Scripts on several nodes: push one to every node, compare what nodes serve."""


_NODE = click.option("--node", "nodes", multiple=True, required=True, metavar="URL",
                     help="A node's own URL (not the load balancer); repeat for every node.")
_TOKEN = click.option("--token", envvar="SCRIPTVISOR_TOKEN", show_envvar=True, required=True,
                      help="The tenant's token (or the admin token); set it in the environment.")


@script_group.command("push")
@click.argument("tenant")
@click.argument("script")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@_NODE
@_TOKEN
def script_push(tenant: str, script: str, file: Path, nodes: tuple[str, ...], token: str) -> None:
    """Save FILE as TENANT's SCRIPT on every node, then check they all serve it (exit 1 if not)."""
    from .server.push import push

    sys.exit(push(list(nodes), tenant, script, file.read_text(encoding="utf-8"), token, echo=click.echo))


@script_group.command("compare")
@click.argument("tenant")
@_NODE
@_TOKEN
def script_compare(tenant: str, nodes: tuple[str, ...], token: str) -> None:
    """Exit 1, naming each script, when the nodes do not serve identical scripts for TENANT."""
    from .server.push import compare

    sys.exit(compare(list(nodes), tenant, token, echo=click.echo))


@main.group(cls=_Group)
def bench() -> None:
    """Benchmarks against the peer runtimes (peers: pip install 'scriptvisor[bench]')."""


@bench.command("faults", context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_faults(args: tuple[str, ...]) -> None:
    """Load a node while injecting faults; prints sent/answered/lost/hung per fault
    (options: python -m scriptvisor.bench.faults --help)."""
    from scriptvisor.bench.faults import main as run_faults

    sys.exit(run_faults(list(args)))


@bench.command("recycle")
@click.option("--quick", is_flag=True, help="Small counts, well under a minute (what CI runs).")
@click.option("--out", "out_dir", default="bench-results", show_default=True,
              type=click.Path(file_okay=False), help="Directory for results.json, results.md, plots.")
@click.option("--figure", "figures", multiple=True,
              help="warm, recycle, timeout, throughput, chaos, idle (repeatable; default: all).")
@click.option("--system", "systems", multiple=True, help="Limit to these systems (repeatable).")
@click.option("--n", type=click.IntRange(min=1), help="Samples per latency figure.")
def bench_recycle(quick: bool, out_dir: str, figures: tuple[str, ...], systems: tuple[str, ...],
                  n: int | None) -> None:
    """Recycle latency, overshoot, overhead, throughput, idle cost and chaos hangs, side by side."""
    from scriptvisor.bench.recycle import main as run_bench

    sys.exit(run_bench(quick, out_dir, list(figures) or None, list(systems) or None, n))


if __name__ == "__main__":  # pragma: no cover
    main()
