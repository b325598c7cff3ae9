"""The daemon config: one typed schema from defaults, TOML, ROOMTONE_* env and CLI, errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli.main import build_parser
from service.cli.run_command import overrides_from_args
from service.config import DEFAULT_MODEL, DaemonConfig, ConfigError, MicConfig, load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def model(tmp_path) -> Path:
    """Any existing file stands in for the model path (config checks only that it exists)."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"x")
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "roomtone.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_bundled_model_a_data_dir_store_and_one_auto_microphone():
    config = DaemonConfig()
    assert Path(config.model) == DEFAULT_MODEL
    assert config.store_path == Path("var") / "roomtone.db"
    assert config.mics == (MicConfig(id="mic0", kind="auto"),)
    assert config.grpc.address.startswith("127.0.0.1:")
    assert config.metrics.address == "127.0.0.1"
    assert (config.pipeline.window_s, config.pipeline.hop_s) == (10.0, 10.0)


def test_toml_env_and_cli_override_in_that_order(tmp_path, model):
    path = write(tmp_path, f'model = "{model}"\n[pipeline]\nhop_s = 5.0\nqueue_size = 3\n[metrics]\nport = 9000\n')
    env = {"ROOMTONE_PIPELINE__HOP_S": "2.5", "ROOMTONE_DATA_DIR": str(tmp_path / "d"), "PATH": "/bin"}
    config = load_config(path, {"pipeline": {"hop_s": 1.0}}, environ=env)
    assert config.pipeline.hop_s == 1.0  # CLI beats env beats TOML
    assert config.pipeline.queue_size == 3  # TOML kept where nothing overrides it
    assert config.metrics.port == 9000
    assert config.store_path == tmp_path / "d" / "roomtone.db"
    assert load_config(path, {}, environ=env).pipeline.hop_s == 2.5


def test_several_microphones_from_toml_tables(tmp_path, model, homesounds):
    clip = homesounds / "audio" / "water" / "water_A1_000.flac"
    path = write(tmp_path, f'model = "{model}"\n[[mics]]\nid = "kitchen"\nkind = "file"\npath = "{clip}"\n'
                           '[[mics]]\nid = "hall"\nkind = "demo"\n')
    config = load_config(path, environ={})
    assert [m.id for m in config.mics] == ["kitchen", "hall"]
    assert config.mics[0].path == str(clip)


@pytest.mark.parametrize("text, key", [
    ("colour = 3\n", "colour"),
    ("[pipeline]\nhop = 5\n", "pipeline.hop"),
    ("[pipeline]\nhop_s = \"fast\"\n", "pipeline.hop_s"),
    ("[metrics]\nport = 1.5\n", "metrics.port"),
    ("[grpc]\nenabled = \"maybe\"\n", "grpc.enabled"),
    ("[[mics]]\nid = \"a\"\nkind = \"file\"\npath = \"/no/such.wav\"\n", "mics[0].path"),
    ("[[mics]]\nid = \"a\"\nkind = \"radio\"\n", "mics[0].kind"),
    ("[[mics]]\nid = \"a\"\n[[mics]]\nid = \"a\"\n", "mics[1].id"),
    ("[[mics]]\nid = \"a\"\nchannels = 0\n", "mics[0].channels"),
    ("[pipeline]\ndevice = \"tpu\"\n", "pipeline.device"),
    ("[grpc]\naddress = \"nowhere\"\n", "grpc.address"),
    ("[health]\nclip_levle = 0.9\n", "health.clip_levle"),
    ("log_format = \"xml\"\n", "log_format"),
    ("[similarity]\nnprobe = 0\n", "similarity.nprobe"),
    ("[similarity]\nnlist = 4096\n", "similarity.exact_below"),
])
def test_a_bad_value_is_an_error_naming_its_key(tmp_path, model, text, key):
    path = write(tmp_path, f'model = "{model}"\n' + text)
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(path, environ={})


def test_the_similarity_index_is_tuned_in_its_own_table_or_environment(tmp_path, model):
    path = write(tmp_path, f'model = "{model}"\n[similarity]\nexact_below = 200000\nnlist = 2048\n')
    config = load_config(path, environ={"ROOMTONE_SIMILARITY__NPROBE": "32"})
    assert (config.similarity.exact_below, config.similarity.nlist, config.similarity.nprobe) == (200_000, 2048, 32)
    assert DaemonConfig().similarity.exact_below == 100_000


def test_a_missing_model_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"model: no such model file .*absent\.pt"):
        load_config(None, {"model": str(tmp_path / "absent.pt")}, environ={})


def test_a_missing_or_broken_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: no such file"):
        load_config(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "model = \n"), environ={})


def test_an_unknown_roomtone_environment_variable_is_named(model):
    with pytest.raises(ConfigError, match="ROOMTONE_COLOUR"):
        load_config(None, {"model": str(model)}, environ={"ROOMTONE_COLOUR": "red"})
    with pytest.raises(ConfigError, match="ROOMTONE_DISPLAY__PORT"):
        load_config(None, {"model": str(model)}, environ={"ROOMTONE_DISPLAY__PORT": "1"})
    with pytest.raises(ConfigError, match="metrics.port"):
        load_config(None, {"model": str(model)}, environ={"ROOMTONE_METRICS__PORT": "high"})


def test_command_line_sources_replace_the_configured_microphones(model, homesounds):
    clip = homesounds / "audio" / "water" / "water_A1_000.flac"
    args = build_parser().parse_args(["run", "--model", str(model), "--file", f"sink={clip}", "--file", str(clip),
                                      "--fast", "--hop-s", "5", "--max-windows", "3", "--metrics-port", "0"])
    config = load_config(None, overrides_from_args(args), environ={})
    assert [(m.id, m.kind, m.realtime) for m in config.mics] == [("sink", "file", False), ("file1", "file", False)]
    assert (config.pipeline.hop_s, config.pipeline.max_windows, config.metrics.port) == (5.0, 3, 0)


def test_the_deploy_example_config_is_valid(model):
    config = load_config(REPO / "deploy" / "roomtone.toml", {"model": str(model)}, environ={})
    assert config.mics[0].id == "livingroom"


@pytest.mark.parametrize("key, value", [
    ("PIPELINE__WINDOW_S", "nan"), ("PIPELINE__WINDOW_S", "inf"), ("PIPELINE__WINDOW_S", "1e400"),
    ("PIPELINE__WINDOW_S", "0.02"), ("PIPELINE__HOP_S", "1e-6"), ("STORE__MAX_AGE_DAYS", "nan"),
    ("STORE__MAX_AGE_DAYS", "1e300"), ("STORE__MAX_SIZE_MB", "0.001"), ("STORE__MAX_SIZE_MB", "inf"),
    ("STORE__RETENTION_INTERVAL_S", "nan"), ("STORE__RETENTION_INTERVAL_S", "1e10"),
    ("GRPC__MAX_UPLOAD_BYTES", "1e11"), ("GRPC__MAX_UPLOAD_BYTES", "100000000000"), ("GRPC__ADDRESS", "127.0.0.1:99999"),
    ("METRICS__PORT", "70000"), ("GRPC__MAX_STREAMS", "0"), ("HEALTH__HUM_MAX_DB", "nan"),
])
def test_a_number_that_is_not_finite_or_out_of_its_range_is_refused_naming_the_variable(model, key, value):
    with pytest.raises(ConfigError, match=f"ROOMTONE_{key}"):
        load_config(None, {"model": str(model)}, environ={f"ROOMTONE_{key}": value})


@pytest.mark.parametrize("text, key", [
    ("[pipeline]\nwindow_s = nan\n", "pipeline.window_s"),
    ("[pipeline]\nhop_s = inf\n", "pipeline.hop_s"),
    ("[store]\nretention_interval_s = nan\n", "store.retention_interval_s"),
    ("[store]\nretention_interval_s = 1e10\n", "store.retention_interval_s"),
    ("[grpc]\naddress = \"127.0.0.1:99999\"\n", "grpc.address"),
])
def test_a_toml_number_out_of_range_is_an_error_naming_its_key(tmp_path, model, text, key):
    with pytest.raises(ConfigError, match=key):
        load_config(write(tmp_path, f'model = "{model}"\n' + text), environ={})


def test_an_infinite_max_age_means_keep_forever(model):
    config = load_config(None, {"model": str(model)}, environ={"ROOMTONE_STORE__MAX_AGE_DAYS": "inf"})
    assert config.store.max_age_days == float("inf")


def test_a_bad_command_line_value_names_the_key_not_an_environment_variable(model):
    with pytest.raises(ConfigError, match=r"^pipeline\.window_s: ") as error:
        load_config(None, {"model": str(model), "pipeline": {"window_s": float("nan")}},
                    environ={"ROOMTONE_PIPELINE__WINDOW_S": "5"})
    assert "ROOMTONE_" not in str(error.value)


def test_every_section_is_reachable_from_the_environment():
    from service.config import DaemonConfig, env_overrides, sections

    assert set(sections()) >= {"store", "grpc", "metrics", "pipeline", "similarity", "health"}
    for name, cls in sections().items():
        first_key = next(iter(getattr(cls, "model_fields", None) or cls.__dataclass_fields__))
        assert env_overrides({f"ROOMTONE_{name.upper()}__{first_key.upper()}": "1"}) == {name: {first_key: "1"}}
    assert DaemonConfig.model_fields["health"].default == DaemonConfig().health


def test_the_run_options_leave_defaults_to_the_config_schema():
    """A default is written once, on its config field: `roomtone run` options default to None."""
    args = build_parser().parse_args(["run"])
    assert overrides_from_args(args) == {}


def test_the_key_table_in_docs_is_generated_from_the_schema():
    from service.config import reference_table

    assert reference_table() in (REPO / "docs" / "daemon.md").read_text(), \
        "docs/daemon.md is out of date: regenerate its key table with `python -m service.config`"


def test_a_fifo_or_a_device_as_a_file_microphone_is_refused_as_not_a_regular_file(tmp_path, model):
    import os

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        with pytest.raises(ConfigError, match=r"mics\[0\]\.path: .* is not a regular file"):
            load_config(None, {"model": str(model), "mics": [{"id": "a", "kind": "file", "path": str(path)}]},
                        environ={})


@pytest.mark.parametrize("mic_id", ["../../x", "<script>", "Kitchen", "a/b", "living room", "-x", ""])
def test_a_microphone_id_outside_the_one_name_rule_is_a_config_error_naming_the_key_and_the_id(mic_id):
    with pytest.raises(ConfigError, match=r"mics\[0\]\.id: microphone id .*use 1-64 characters of a-z, 0-9"):
        load_config(None, {"model": __file__, "mics": [{"id": mic_id, "kind": "demo"}]}, environ={})


def test_microphone_ids_and_sound_names_follow_the_same_rule():
    from service.analysis.sound_library import SoundError, check_name

    for name in ("kitchen", "living-room", "r44101", "mic_0"):
        assert load_config(None, {"model": __file__, "mics": [{"id": name, "kind": "demo"}]}, environ={}).mics[0].id == name
        check_name(name)
    with pytest.raises(SoundError):
        check_name("Kitchen")
