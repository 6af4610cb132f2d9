"""The examples in examples/ run and print what they promise, and so do the README's commands
for a newcomer (``python3 scripts/dev.py run ...``, the property-testing example)."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent


def test_embedding_example_prints_received_frames() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embed.py")], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    lines = out.splitlines()
    assert lines[0].startswith("data ") and "C" in lines[0]  # metadata first
    assert any(line.startswith("video h264  dts=   0 K") for line in lines)
    assert "published 12 video and 6 audio frames" in out  # configs are not media frames
    assert "event: StreamPublished live/cam" in out


def test_ws_frames_demo_publishes_over_the_frame_protocol_and_the_frames_come_back() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "ws_frames_demo.py"), "--serve", "--seconds", "2.5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "config video: avc1.4d401e" in out and "config audio: mp4a.40.2" in out
    assert "first video frame: keyframe=True" in out
    assert "published " in out and "stream ended: stream-ended" in out
    watched = int(out.split("watched ")[1].split()[0])
    assert watched >= 100  # 2.5 s of 30 fps video and 43 fps audio, less the start


# ------------------------------------------------------------------ the README, as written (issue 19, item 10)

README = (ROOT / "README.md").read_text()


def readme_commands(prefix: str) -> list[str]:
    """The shell lines of the README's ``sh`` blocks that start with ``prefix``."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        commands += [line.strip() for line in block.splitlines() if line.strip().startswith(prefix)]
    return commands


def test_the_readmes_dev_py_run_commands_work_as_written() -> None:
    """``arcly-trio sign ...`` and ``python examples/embed.py`` failed as written for a newcomer
    (``arcly-trio`` is in ``.venv/bin``, not on PATH): the README now runs them through
    ``python3 scripts/dev.py run``, and each works exactly as it is written there."""
    commands = readme_commands("python3 scripts/dev.py run ")
    expected = {
        "arcly-trio --version": r"arcly-trio \d+\.\d+\.\d+",
        "arcly-trio sign rtmp://127.0.0.1/live/demo": r"rtmp://127\.0\.0\.1/live/demo\?sign=\d+-[0-9a-f]{32}",
        "python examples/embed.py": r"(?s)data .*published 12 video and 6 audio frames.*event: StreamPublished live/cam",
    }
    for fragment, output in expected.items():
        found = [command for command in commands if fragment in command]
        assert found, f"the README has no `python3 scripts/dev.py run {fragment} ...` any more"
        for command in found:
            argv = shlex.split(command, comments=True)
            assert argv[0] == "python3"
            result = subprocess.run(
                [shutil.which("python3") or sys.executable, *argv[1:]],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == 0, (command, result.stderr)
            assert re.search(output, result.stdout.strip()), (command, result.stdout)


def test_the_readmes_property_testing_example_is_complete_and_runs(tmp_path: Path) -> None:
    """(The example is in docs/testing.md now.) The example used ``MyAuthenticator()`` without saying what one is; it now defines a
    complete one (raising ``Unauthorized(app, stream, action, reason)``) and runs as written
    (here with 3 examples instead of 500)."""
    testing = (ROOT / "docs" / "testing.md").read_text()  # moved out of the README (issue 21)
    section = testing.split("## Property-testing your server", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    assert "max_examples=500" in code
    path = tmp_path / "readme_races.py"
    path.write_text(code.replace("max_examples=500", "max_examples=3"))
    spec = importlib.util.spec_from_file_location("readme_races", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.test_my_server_survives_races()
    from arcly_trio import Credentials, StreamKey, Unauthorized

    authenticator = example.MyAuthenticator()
    with pytest.raises(Unauthorized, match="play of live/cam refused: wrong token"):
        trio.run(authenticator.authorize_play, StreamKey("live", "cam"), Credentials(token="nope"))


def test_dev_py_says_it_is_installing_on_the_first_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first run spent about 45 s in a silent ``pip install --quiet``: it says so now, once."""
    spec = importlib.util.spec_from_file_location("dev", ROOT / "scripts" / "dev.py")
    assert spec is not None and spec.loader is not None
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    ran: list[tuple[str, ...]] = []
    monkeypatch.setattr(dev, "VENV", tmp_path / ".venv")
    monkeypatch.setattr(dev, "BIN", tmp_path / ".venv" / "bin")
    monkeypatch.setattr(dev, "PYTHON", tmp_path / ".venv" / "bin" / "python")
    monkeypatch.setattr(dev, "run", lambda *cmd: ran.append(tuple(map(str, cmd))))
    monkeypatch.setattr(dev.venv.EnvBuilder, "create", lambda self, path: Path(path).mkdir(parents=True))
    dev.ensure_venv("")
    out = capsys.readouterr().out
    assert "Installing arcly-trio into" in out and "about a minute" in out
    assert "python3 scripts/dev.py run COMMAND" in out and "bin/activate" in out
    assert any("pip" in cmd and "install" in cmd for cmd in ran)
    ran.clear()
    dev.ensure_venv("")  # installed: nothing to say, nothing to run
    assert capsys.readouterr().out == "" and ran == []


def test_every_path_the_docs_name_exists() -> None:
    """The README named ``arcly_trio/kernel/frame.py`` (it is ``core/frame.py``), and
    docs/frames-protocol.md ``media/flv.py`` (a package): every ``arcly_trio/...``, ``tests/...``,
    ``scripts/...``, ``examples/...``, ``benchmarks/...`` and ``docs/...`` path the README and
    the docs name exists."""
    pattern = re.compile(r"(?<![\w/.])((?:arcly_trio|tests|scripts|examples|benchmarks|docs)/[\w./-]*\w/?)")
    missing = []
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for path in pattern.findall(document.read_text()):
            if "{" not in path and not (ROOT / path).exists():
                missing.append(f"{document.name}: {path}")
    assert missing == []
