"""Specification of the Debian package lists: the daemon's run-time list carries nothing that only the
tests need, and the run command (scripts/run.sh) and the image never ask for the test list."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN_LIST = REPO / "scripts" / "apt-packages.txt"
TEST_LIST = REPO / "scripts" / "apt-packages-test.txt"
TEST_ONLY = {"prometheus", "docker-compose", "mosquitto", "mosquitto-clients", "chromium", "chromium-driver", "pulseaudio",
             "g++"}


def packages(path: Path) -> set[str]:
    """Package names of a list file (comments and blank lines skipped)."""
    return {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")}


def test_the_run_time_list_holds_only_what_the_daemon_needs():
    assert packages(RUN_LIST) == {"libportaudio2", "libasound2-plugins"}
    assert not packages(RUN_LIST) & TEST_ONLY


def test_every_test_only_package_is_in_the_test_list():
    assert TEST_ONLY <= packages(TEST_LIST)


def test_only_the_test_command_installs_the_test_list():
    assert "setup.sh --test" in (REPO / "scripts" / "test.sh").read_text()
    assert "--test" not in (REPO / "scripts" / "run.sh").read_text()
    dockerfile = [line for line in (REPO / "deploy" / "Dockerfile").read_text().splitlines() if not line.startswith("#")]
    assert any("scripts/setup.sh" in line for line in dockerfile)
    assert not any("--test" in line for line in dockerfile)
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert 'if [ "$mode" = test ]; then lists+=(scripts/apt-packages-test.txt); fi' in setup


def test_the_test_set_up_installs_home_assistant_and_fails_without_it_only_under_ci():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    block = setup[setup.index("# 3. Home Assistant"):]
    block = block[:block.index("\nfi\n") + 4]
    assert 'if [ "$mode" = test ]; then' in block and "bash scripts/setup-home-assistant.sh" in block
    assert '[ "${CI:-}" = true ] && {' in block and "exit 1" in block


def test_ci_turns_a_missing_shared_data_skip_into_a_failure():
    ci = (REPO / ".ci" / "run").read_text()
    assert "export TESTS_REQUIRE_SHARED_DATA=1" in ci
    assert ci.strip().splitlines()[-1] == "exec bash scripts/test.sh"
