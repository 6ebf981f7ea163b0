"""The Dockerfile and docker-compose.yml, checked by reading them (no Docker engine runs here).

What can be checked without building: the image installs pgq with the dashboard at build time
and runs as a user of its own with a ``pgq health`` check; the compose file has PostgreSQL, a
one-shot migration that everything else waits for, two workers, beat and ``pgq web``, all from
that image; and every command is a real ``pgq`` command whose options ``pgq`` itself accepts
(parsed by the CLI's own parser, so a renamed option fails here), with no ``pip install`` at
start-up.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from pgq.cli import cli
from pgq.settings import environment_variables

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]

# The services docker-compose.yml must have, and what each runs.
EXPECTED_COMMANDS = {
    "migrate": "migrate",
    "worker-1": "worker",
    "worker-2": "worker",
    "beat": "beat",
    "web": "web",
}


# -- reading the files ----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def exec_form(arguments: str) -> list[str]:
    """A CMD/ENTRYPOINT/HEALTHCHECK CMD in JSON (exec) form; shell form is refused."""
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def healthcheck_command(arguments: str) -> list[str]:
    """The command of ``HEALTHCHECK [--option=value ...] CMD [...]``."""
    options, marker, command = arguments.partition("CMD ")
    assert marker, f"HEALTHCHECK without CMD: {arguments}"
    for option in options.split():
        assert re.fullmatch(r"--(interval|timeout|start-period|start-interval|retries)=\S+", option)
    return exec_form(command)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with no VAR set: what a plain ``docker compose up`` uses."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        loaded: dict[str, Any] = tomllib.load(file)
    return loaded


def parse_pgq_command(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``pgq SUBCOMMAND ARGS...`` with pgq's own CLI parser, as the container would.

    Returns the subcommand's name and its parsed parameters; an unknown command, an unknown
    option or a bad value fails the test with the parser's message.
    """
    assert argv and argv[0] == "pgq", f"not a pgq command: {argv}"
    assert len(argv) > 1 and not argv[1].startswith("-"), f"no subcommand first in {argv}"
    # Typer's own click (newer Typer releases vendor it): used through the objects it returns.
    group: Any = typer.main.get_command(cli)
    with group.make_context("pgq", [], resilient_parsing=True) as parent:
        command = group.get_command(parent, argv[1])
        assert command is not None, f"`pgq {argv[1]}` is not a pgq command"
        try:
            with command.make_context(argv[1], list(argv[2:]), parent=parent) as context:
                return argv[1], dict(context.params)
        except Exception as exc:  # click's UsageError, BadParameter...: the parser refused
            message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
            pytest.fail(f"`{' '.join(argv)}`: {message}")


# -- the Dockerfile -------------------------------------------------------------------------------


def test_the_image_is_python_slim_with_pgq_and_the_dashboard_installed_at_build_time() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    installs = [args for kw, args in instructions if kw == "RUN" and "pip install" in args]
    assert len(installs) == 1, installs
    extras = re.search(r"""['"]?\.\[([a-z,-]+)\]['"]?""", installs[0])
    assert extras, f"the image installs the project itself with extras: {installs[0]}"
    wanted = set(extras.group(1).split(","))
    assert "web" in wanted
    declared = set(pyproject()["project"]["optional-dependencies"])
    assert wanted <= declared, f"extras not in pyproject.toml: {sorted(wanted - declared)}"


def test_the_build_copies_what_the_wheel_and_the_commands_need() -> None:
    instructions = dockerfile_instructions()
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied: list[str] = []
    for keyword, args in instructions:
        if keyword == "COPY":
            *sources, _destination = args.split()
            copied += [s for s in sources if not s.startswith("--")]
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), (
            f"COPY {source}, but .dockerignore leaves it out of the build context"
        )
    # pyproject.toml names README.md; the wheel force-includes migrations/ (pgq migrate);
    # the compose file's workers and beat import examples.tasks from the working directory.
    assert {"pyproject.toml", "README.md", "pgq", "migrations", "examples"} <= {
        s.rstrip("/").removeprefix("./") for s in copied
    }
    install = next(i for i, (kw, a) in enumerate(instructions) if kw == "RUN" and "pip" in a)
    copies_of_code = [i for i, (kw, a) in enumerate(instructions) if kw == "COPY" and "pgq" in a]
    assert copies_of_code and max(copies_of_code) < install, "pip install runs before pgq/ is in"


def test_the_container_runs_as_a_user_of_its_own() -> None:
    instructions = dockerfile_instructions()
    users = [(i, args) for i, (kw, args) in enumerate(instructions) if kw == "USER"]
    assert users, "no USER: the container would run as root"
    index, user = users[-1]
    name = user.split(":")[0]
    assert name not in {"root", "0"}
    created = [
        a for kw, a in instructions[:index] if kw == "RUN" and re.search(r"\b(user|adduser)", a)
    ]
    assert any(re.search(rf"\b{re.escape(name)}\b", a) for a in created), f"{name} is never created"
    later_runs = [a for kw, a in instructions[index:] if kw == "RUN"]
    assert not later_runs, f"RUN after USER {name} (installs belong before it): {later_runs}"


def test_the_healthcheck_and_the_default_command_are_pgq_commands() -> None:
    instructions = dict(dockerfile_instructions())
    check = healthcheck_command(instructions["HEALTHCHECK"])
    assert parse_pgq_command(check)[0] == "health"
    name, params = parse_pgq_command(exec_form(instructions["CMD"]))
    assert name == "worker" and params["app"] == "examples.tasks"
    assert "ENTRYPOINT" not in instructions


# -- docker-compose.yml ---------------------------------------------------------------------------


def pgq_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose()["services"].items() if name != "postgres"}


def test_the_stack_is_postgres_migrate_two_workers_beat_and_web() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", *EXPECTED_COMMANDS}
    assert services["postgres"]["image"].startswith("postgres:")
    for name, service in pgq_services().items():
        assert parse_pgq_command(service["command"])[0] == EXPECTED_COMMANDS[name], name
    workers = [n for n, s in pgq_services().items() if s["command"][1] == "worker"]
    assert len(workers) == 2
    names = [parse_pgq_command(services[n]["command"])[1]["hostname"] for n in workers]
    assert len(set(names)) == 2, f"the two workers need names of their own: {names}"


def test_every_pgq_service_is_built_from_the_dockerfile_and_installs_nothing_at_start() -> None:
    for name, service in pgq_services().items():
        build = service.get("build")
        assert isinstance(build, dict), f"{name} is not built from the Dockerfile"
        assert (ROOT / build["context"]).resolve() == ROOT, name
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile", name
        run = [*service.get("entrypoint", []), *service["command"]]
        assert isinstance(service["command"], list), f"{name}: use the exec form (a list)"
        assert not any(re.search(r"\bpip\b|\binstall\b", part) for part in run), (name, run)
        assert "volumes" not in service, f"{name} mounts the source: the image has it already"


def test_the_pgq_services_reach_the_compose_postgres_and_declare_their_variables() -> None:
    services = compose()["services"]
    postgres = services["postgres"]["environment"]
    url = (
        f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    declared = {variable.env for variable in environment_variables()}
    for name, service in pgq_services().items():
        environment = service["environment"]
        assert environment["PGQ_DATABASE_URL"] == url, name
        pgq_variables = {key for key in environment if key.startswith("PGQ_")}
        assert pgq_variables <= declared, f"{name}: undeclared {sorted(pgq_variables - declared)}"


def test_the_migration_runs_once_and_everything_waits_for_it() -> None:
    services = compose()["services"]
    migrate = services["migrate"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert migrate["restart"] == "no"
    for name, service in pgq_services().items():
        if name != "migrate":
            assert service["depends_on"] == {
                "migrate": {"condition": "service_completed_successfully"}
            }, name


def test_beat_has_periodic_tasks_to_schedule() -> None:
    _, params = parse_pgq_command(compose()["services"]["beat"]["command"])
    module = params["app"]
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file()
    from examples.tasks import app

    assert module == "examples.tasks" and app.periodic_entries()


def test_the_dashboard_is_published_on_5555_with_credentials() -> None:
    web = compose()["services"]["web"]
    _, params = parse_pgq_command(web["command"])
    assert params["port"] == 5555 and params["host"] == "0.0.0.0"
    assert web["ports"] == ["127.0.0.1:5555:5555"]
    # Listening on every interface of the container: pgq web refuses that without credentials.
    auth = params.get("auth") or interpolate(web["environment"].get("PGQ_WEB_AUTH", ""))
    assert re.fullmatch(r"[^:\s]+:\S+", auth), "pgq web needs PGQ_WEB_AUTH=USER:PASSWORD here"
    assert not params.get("no_auth")


def test_health_checks_use_pg_isready_and_pgq_health() -> None:
    services = compose()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["migrate"]["healthcheck"] == {"disable": True}  # it exits when done
    for name, service in pgq_services().items():
        if name == "migrate":
            continue
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", name
        command, params = parse_pgq_command(test[1:])
        assert command == "health", name
        if service["command"][1] == "worker":
            assert params["with_workers"], f"{name}: its check should require a live worker"


def test_named_volumes_are_declared_and_used() -> None:
    loaded = compose()
    used = {
        volume.split(":")[0]
        for service in loaded["services"].values()
        for volume in service.get("volumes", [])
    }
    assert used == set(loaded.get("volumes", {}))
