"""Every command the README shows is real: make targets exist, nlrepro commands parse.

Commands come from the README's fenced shell blocks (in ``console`` blocks only the ``$ `` lines;
in unlabelled blocks only lines that run make or nlrepro, since those may hold output) and from
inline code spans that start with ``make`` or ``nlrepro``; ``a && b``, pipes and redirections
are split apart, ``<placeholders>`` kept as words.  Other programs (git, pip, pytest ...) are not
this project's interface and are skipped, unless the name looks like a typo of make/nlrepro.

A make target must be a rule of the Makefile (parsed here, variables and ``$(addprefix)``
expanded) and known to ``make -n`` (which prints its recipe without running it); every
``nlrepro`` line of that recipe is checked like a README command.  An ``nlrepro`` command must:
have a subcommand whose ``--help`` exits 0; use only flags that help lists; parse with the real
argument parser; name grid files that exist; and, where it takes ``--profile``/``--set``,
resolve to a valid config.  Nothing is trained or launched, and the README's prose, tables and
images (results, Figure 3) may change freely.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import re
import shlex
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
SHELL_LANGS = {"bash", "sh", "shell", "zsh"}  # every line is a command
PROMPT_LANGS = {"console", "shell-session"}  # only "$ " lines are commands, the rest is output
OURS = ("make", "nlrepro")
OPERATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = {">", ">>", "<", ">|"}


def split_line(line: str) -> list[str]:
    """One shell line -> its simple commands (operators split, redirections and comments
    dropped); ``<run-id>``-style placeholders stay words."""
    line = re.sub(r"<([\w.-]+)>", r"_\1_", line)
    line = re.sub(r"(?<!\S)\d*>&\d+", "", line)           # 2>&1
    line = re.sub(r"(?<!\S)[\d&]+(>>?|<)", r"\1", line)    # 2> file, &> file
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, words, skip = [], [], False
    for token in lexer:
        if skip:
            skip = False
        elif token in OPERATORS:
            commands.append(words)
            words = []
        elif token in REDIRECTS:
            skip = True  # and its target
        else:
            words.append(token)
    commands.append(words)
    return [shlex.join(w) for w in commands if w]


def program(cmd: str) -> str:
    """The program a command runs (after ``VAR=value`` words; ``python -m x`` -> x)."""
    return split_command(cmd)[1][0] if split_command(cmd)[1] else ""


def fenced_commands(text: str) -> list[str]:
    """Commands of fenced shell blocks, comments and prompts stripped, continuations joined."""
    out: list[str] = []
    for lang, body in re.findall(r"^```([\w-]*)[^\n]*\n(.*?)^```", text, re.M | re.S):
        lang = lang.lower()
        if lang and lang not in SHELL_LANGS | PROMPT_LANGS:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip()
            if lang in PROMPT_LANGS:
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            line = line.removeprefix("$ ")
            for cmd in split_line(line) if line else []:
                if lang or program(cmd) in OURS:  # an unlabelled block may hold output
                    out.append(cmd)
    return out


def inline_commands(text: str) -> list[str]:
    """Inline code spans that are a make or nlrepro command (``PROFILE=x make t`` included)."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    prose = re.sub(r"<!--.*?-->", "", prose, flags=re.S)
    out = []
    for span in re.findall(r"`([^`\n]+)`", prose):
        words = [w for w in span.split() if not re.match(r"^[A-Z_]+=", w)]
        if len(words) >= 2 and words[0] in OURS and "…" not in span and "..." not in span:
            out.extend(split_line(span.strip()))
    return list(dict.fromkeys(out))


def readme_commands() -> list[str]:
    text = README.read_text()
    return list(dict.fromkeys(fenced_commands(text) + inline_commands(text)))


def names_only(cmd: str) -> bool:
    """An inline ``nlrepro <sub>`` in prose names a command rather than showing a call."""
    words = cmd.split()
    return len(words) == 2 and words[0] == "nlrepro" and cmd not in FENCED


def split_command(cmd: str) -> tuple[dict[str, str], list[str]]:
    """``"A=1 make x"`` -> ``({"A": "1"}, ["make", "x"])``; ``python -m nlrepro`` -> nlrepro."""
    words = shlex.split(cmd)
    env = {}
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    if words[:1] and re.search(r"(^|/)python3?$", words[0]) and words[1:3] == ["-m", "nlrepro"]:
        words = ["nlrepro", *words[3:]]
    if words and words[0].endswith("/nlrepro"):
        words[0] = "nlrepro"
    return env, words


@lru_cache(maxsize=None)
def subcommand_help(sub: str) -> str:
    """``nlrepro <sub> --help`` through the real parser (in-process: one torch import)."""
    from nlrepro.cli import build_parser

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        build_parser([sub, "--help"]).parse_args([sub, "--help"])
    assert exc.value.code == 0, f"`nlrepro {sub} --help` exited {exc.value.code}"
    return out.getvalue()


def check_nlrepro(argv: list[str], origin: str) -> None:
    from nlrepro.cli import COMMANDS, build_parser

    assert argv, f"{origin}: empty nlrepro command"
    sub = argv[0]
    assert sub in COMMANDS, f"{origin}: unknown subcommand {sub!r}; valid: {sorted(COMMANDS)}"
    help_text = subcommand_help(sub)
    listed = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", help_text))
    for word in argv[1:]:
        if word.startswith("-") and not re.match(r"^-\d", word):
            flag = word.split("=", 1)[0]
            assert flag in listed, f"{origin}: flag {flag} is not in `nlrepro {sub} --help`"
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit as exc:  # argparse reports the problem on stderr
        pytest.fail(f"{origin}: `nlrepro {shlex.join(argv)}` does not parse (exit {exc.code})")
    grids = getattr(args, "grid", None)
    for grid in grids if isinstance(grids, list) else [grids] if grids else []:
        assert (ROOT / grid).is_file(), f"{origin}: grid file {grid} does not exist"
    if sub == "table":
        from nlrepro.sweep import grid_path
        for table in args.table:  # ConfigError naming the valid tables
            grid_path(table)
    if hasattr(args, "profile") and hasattr(args, "sets") and args.profile:
        from nlrepro.config import load_config
        load_config(args.profile, sets=args.sets)  # ConfigError naming key and choices


def _expand(text: str, variables: dict[str, str]) -> str:
    """``$(VAR)`` and ``$(addprefix p,words)`` of a Makefile line (what target names use)."""
    for _ in range(10):
        new = re.sub(r"\$\((addprefix|addsuffix) ([^,()]*),([^()]*)\)",
                     lambda m: " ".join((m[2] + w) if m[1] == "addprefix" else (w + m[2])
                                        for w in m[3].split()), text)
        new = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: variables.get(m[1], ""), new)
        if new == text:
            break
        text = new
    return text


@lru_cache(maxsize=None)
def makefile_targets(path: Path = MAKEFILE) -> frozenset[str]:
    """Explicit rule targets of the Makefile (continuations joined, variables expanded)."""
    variables: dict[str, str] = {}
    targets: set[str] = set()
    for line in path.read_text().replace("\\\n", " ").splitlines():
        if line.startswith("\t") or line.lstrip().startswith("#"):
            continue
        assign = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(\?|:|\+)?=\s*(.*)$", line)
        if assign:
            name, kind, value = assign.groups()
            value = _expand(value.split("#")[0].strip(), variables)
            if kind == "+":
                variables[name] = f"{variables.get(name, '')} {value}".strip()
            elif kind != "?" or name not in variables:
                variables[name] = value
            continue
        rule = re.match(r"^([^:=#]+?)\s*::?(?!=)", line)
        if rule:
            for target in _expand(rule[1], variables).split():
                if not target.startswith(".") and "%" not in target and "$" not in target:
                    targets.add(target)
    return frozenset(targets)


def make_dry_run(target_args: list[str], env: dict[str, str]) -> list[list[str]]:
    """``make -n`` of a target: exits 0 only for a real target; returns its recipe's commands.

    The target must first be a rule of the (parsed) Makefile; without a ``make`` binary that is
    all that is checked.  Python scripts the recipe runs must exist; the ``nlrepro`` commands
    are returned (argv after ``nlrepro``) for the caller to check.
    """
    targets = [w for w in target_args if "=" not in w]
    valid = sorted(makefile_targets())
    for target in targets:
        assert target in valid, (f"`make {target}` is not a real target of the Makefile; "
                                 f"valid: {', '.join(valid)}")
    if shutil.which("make") is None:
        return []
    overrides = [f"{k}={v}" for k, v in env.items()]
    proc = subprocess.run(["make", "-n", "--no-print-directory", *overrides, *target_args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (f"`make {' '.join(target_args)}` is not a real target:\n"
                                  f"{proc.stderr}")
    commands = []
    for line in proc.stdout.splitlines():
        words = shlex.split(line) if line.strip() else []
        if not words:
            continue
        if words[0] == "nlrepro" or words[0].endswith("/nlrepro"):
            commands.append(words[1:])
        elif re.search(r"python3?$", words[0]) and len(words) > 1 and words[1].endswith(".py"):
            assert (ROOT / words[1]).is_file(), f"`make {target_args}` runs missing {words[1]}"
    return commands


COMMANDS = readme_commands()
FENCED = set(fenced_commands(README.read_text()))


def test_the_console_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "nlrepro", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "attention" in proc.stdout, proc.stderr


def test_readme_has_commands():
    kinds = {split_command(c)[1][0] for c in COMMANDS}
    assert {"make", "nlrepro"} <= kinds, COMMANDS


@pytest.mark.parametrize("cmd", COMMANDS)
def test_readme_command_is_real(cmd):
    env, words = split_command(cmd)
    if words[0] == "make":
        assert all(not w.startswith("-") for w in words[1:]), f"unexpected make flag in {cmd!r}"
        for argv in make_dry_run(words[1:], env):
            check_nlrepro(argv, f"{cmd!r} (recipe)")
    elif names_only(cmd):
        from nlrepro.cli import COMMANDS as SUBCOMMANDS
        assert words[1] in SUBCOMMANDS, f"unknown subcommand in {cmd!r}"
        subcommand_help(words[1])
    elif words[0] == "nlrepro":
        check_nlrepro(words[1:], repr(cmd))
    else:  # another program (git, pip, pytest ...): not ours to check, unless a typo of ours
        close = difflib.get_close_matches(words[0], OURS, n=1, cutoff=0.7)
        assert not close, f"README command {cmd!r}: {words[0]!r} looks like a typo of {close[0]!r}"


# ---- the checker itself must catch wrong commands ---------------------------------------
def test_extraction_of_fenced_and_inline_commands():
    text = ("intro `make table2a` and `PROFILE=kinetics make status` and `make table2a` … x\n"
            "```bash\nmake test      # the suite\n$ nlrepro collect --profile proxy \\\n"
            "  --results r\n```\n```yaml\nmake: no\n```\n")
    assert fenced_commands(text) == ["make test", "nlrepro collect --profile proxy --results r"]
    assert inline_commands(text) == ["make table2a", "PROFILE=kinetics make status"]
    assert split_command("PROFILE=kinetics make status") == ({"PROFILE": "kinetics"},
                                                             ["make", "status"])
    assert split_command(".venv/bin/python -m nlrepro table 2a")[1] == ["nlrepro", "table", "2a"]


def test_extraction_survives_results_output_and_shell_syntax():
    """What a README update may bring: a results table, an image, command output, pipes."""
    text = ("<!-- results:begin -->\n| model | top-1 |\n|---|---|\n| `C2D` | 50.1 |\n"
            "![Figure 3](paper_tables/proxy/figure3.png)\n<!-- results:end -->\n"
            "```\ntable 2a: 15 runs; 15 done\nmake figure3\n```\n"
            "```console\n$ make status | head -3\ntable 2a: 15 runs\n$ nlrepro collect > log\n```\n"
            "```bash\ngit clone x && cd nlrepro\nmake table2a PROFILE=proxy 2>&1 | tee log\n"
            "nlrepro attention results/proxy/2a/<run-id> --video 3\n```\n"
            "see `nlrepro table 2a --no-plots` or `make table2a` … `make table2g`\n")
    assert fenced_commands(text) == [
        "make figure3", "make status", "head -3", "nlrepro collect", "git clone x", "cd nlrepro",
        "make table2a PROFILE=proxy", "tee log", "nlrepro attention results/proxy/2a/_run-id_ "
        "--video 3"]
    assert inline_commands(text) == ["nlrepro table 2a --no-plots", "make table2a",
                                     "make table2g"]


def test_makefile_targets_are_parsed_with_variables():
    targets = makefile_targets()
    assert {"help", "setup", "test", "figure3", "table2a", "table2g", "tables"} <= targets
    assert not any(t.startswith((".", "$")) or "%" in t for t in targets)


@pytest.mark.parametrize("argv, message", [
    (["no-such-command"], "unknown subcommand"),
    (["collect", "--no-such-flag"], "not in"),
    (["collect", "--profile"], "does not parse"),
    (["sweep", "experiments/table9z.yaml", "--dry-run"], "does not exist"),
    (["train", "--set", "model.nonlocal.instantiation=softmax"], "softmax"),
])
def test_checker_rejects_wrong_commands(argv, message):
    from nlrepro.config import ConfigError

    with pytest.raises((AssertionError, ConfigError, pytest.fail.Exception), match=message):
        check_nlrepro(argv, "test")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_makefile_default_profile_is_the_commands_default(monkeypatch):
    """`make tables` without PROFILE runs the profile every nlrepro command defaults to."""
    from nlrepro.choices import DEFAULT_PROFILE

    # `make test PROFILE=x` (or PROFILE in the environment) would reach the inner make.
    for name in ("PROFILE", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"):
        monkeypatch.delenv(name, raising=False)
    profiles = {c[c.index("--profile") + 1] for c in make_dry_run(["tables"], {})}
    assert profiles == {DEFAULT_PROFILE}


def test_checker_rejects_unknown_make_target():
    with pytest.raises(AssertionError, match="not a real target.*valid: .*figure3"):
        make_dry_run(["no-such-target"], {})


@pytest.mark.parametrize("cmd, message", [
    ("mkae table2a", "typo of 'make'"),
    ("nlrepo collect", "typo of 'nlrepro'"),
    ("make tabel2a", "not a real target"),
    ("nlrepro attention auto --no-such-flag", "not in"),
])
def test_readme_check_rejects_typos(cmd, message):
    with pytest.raises((AssertionError, pytest.fail.Exception), match=message):
        test_readme_command_is_real(cmd)


def test_make_recipe_commands_are_returned_for_checking():
    commands = make_dry_run(["table2c"], {"PROFILE": "kinetics", "LAUNCHER": "slurm"})
    assert ["sweep", "experiments/table2c.yaml", "--profile", "kinetics",
            "--launcher", "slurm"] in commands
