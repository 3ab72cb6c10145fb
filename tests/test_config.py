"""Settings: TOML files and flags, unknown keys and bad values named in the error."""
import pytest

from mpips.cli import build_parser, train_config
from mpips.config import TrainConfig, from_mapping, load_toml
from mpips.data.plan import plan_data
from mpips.errors import ConfigError


def test_toml_keys_match_flags(tmp_path):
    f = tmp_path / "job.toml"
    f.write_text('batch-size = 512\nlr = 1\noptimizer = "sgd"\nservers = 2\n')
    cfg = load_toml(f)
    assert (cfg.batch_size, cfg.lr, cfg.optimizer, cfg.servers) == (512, 1.0, "sgd", 2)


def test_train_table_is_accepted(tmp_path):
    f = tmp_path / "job.toml"
    f.write_text("[train]\nepochs = 3\n")
    assert load_toml(f).epochs == 3


def test_unknown_key_is_named(tmp_path):
    f = tmp_path / "job.toml"
    f.write_text("epochs = 1\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"job.toml: unknown setting 'learning_rate'"):
        load_toml(f)


def test_wrong_type_and_bad_value_are_named(tmp_path):
    f = tmp_path / "job.toml"
    f.write_text('epochs = "two"\n')
    with pytest.raises(ConfigError, match="epochs must be int"):
        load_toml(f)
    f.write_text("lr = -1\n")
    with pytest.raises(ConfigError, match=r"job.toml: --lr must be a finite number > 0"):
        load_toml(f)
    f.write_text("lr = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(f)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="no such config file"):
        load_toml("/nonexistent/job.toml")


def test_flags_override_file(tmp_path):
    f = tmp_path / "job.toml"
    f.write_text("epochs = 3\nlr = 0.5\n")
    args = build_parser().parse_args(["train", "--config", str(f), "--lr", "0.1"])
    cfg = train_config(args)
    assert cfg.epochs == 3 and cfg.lr == 0.1 and cfg.batch_size == TrainConfig().batch_size


def test_choices_checked():
    with pytest.raises(ConfigError, match="--optimizer must be one of"):
        from_mapping({"optimizer": "rmsprop"})


@pytest.mark.parametrize("values,msg", [
    ({"seed": -1}, "--seed must lie in"),
    ({"lr": float("inf")}, "--lr must be a finite number"),
    ({"test": "t.tsv"}, "--test needs --data"),
    ({"batch_size": 0}, "--batch-size must be >= 1"),
])
def test_bad_values_rejected_up_front(values, msg):
    with pytest.raises(ConfigError, match=msg):
        from_mapping(values)


def test_per_table_sync_sections(tmp_path):
    """[tables.NAME] overrides the job's sync; the job's staleness is the default."""
    f = tmp_path / "job.toml"
    f.write_text('sync = "async"\nstaleness = 5\n[tables.bias]\nsync = "ssp"\n')
    cfg = load_toml(f)
    assert cfg.sync_of("bias").mode == "ssp" and cfg.sync_of("bias").staleness == 5
    assert cfg.sync_of("weights").mode == "async"
    f.write_text('[tables.bias]\nsync = "ssp"\nlag = 2\n')
    with pytest.raises(ConfigError, match="unknown setting 'tables.bias.lag'"):
        load_toml(f)
    f.write_text('[tables.bias]\nsync = "eventual"\n')
    with pytest.raises(ConfigError, match="tables.bias.sync must be one of"):
        load_toml(f)


def test_slow_worker_setting():
    assert from_mapping({"slow_worker": "1:3"}).slow() == (1, 3.0)
    with pytest.raises(ConfigError, match="--slow-worker must be I:FACTOR"):
        from_mapping({"slow_worker": "fast"})


def test_field_buckets_sections(tmp_path):
    """[fields.NAME] buckets = N gives a field hash buckets of its own."""
    f = tmp_path / "job.toml"
    f.write_text("table-rows = 1000\n[fields.C3]\nbuckets = 50\n[fields.I1]\nbuckets = 8\n")
    cfg = load_toml(f)
    assert cfg.fields == (("C3", 50), ("I1", 8))
    plan = plan_data(cfg.replace(synthetic_rows=100))
    assert plan.table_rows == 1058
    f.write_text("[fields.C3]\nbuckets = 0\n")
    with pytest.raises(ConfigError, match="fields.C3.buckets must be an integer >= 1"):
        load_toml(f)
    f.write_text("[fields.C3]\nbucket = 5\n")
    with pytest.raises(ConfigError, match="unknown setting 'fields.C3.bucket'"):
        load_toml(f)
    with pytest.raises(ConfigError, match="fields.C99: no such field"):
        plan_data(TrainConfig(fields=(("C99", 5),)))


def test_section_errors_name_the_file_once(tmp_path):
    f = tmp_path / "job.toml"
    f.write_text("[tables.bias]\nsync = 3\n")
    with pytest.raises(ConfigError) as err:
        load_toml(f)
    assert str(err.value).count("job.toml") == 1 and "tables.bias" in str(err.value)


def test_first_order_weights_learn_at_lrs_rate_unless_a_rate_is_given():
    """FM and DeepFM keep LR's rate for their first-order weights when no --lr is given;
    a given --lr sets both; --linear-lr sets its own; a copy with another model follows."""
    fm = TrainConfig(model="fm")
    assert (fm.lr, fm.linear_lr) == (0.01, TrainConfig().lr) == (0.01, 0.05)
    assert TrainConfig(model="deepfm", lr=0.02).linear_lr == 0.02
    assert TrainConfig(model="fm", linear_lr=0.2).linear_lr == 0.2
    assert TrainConfig(model="fm", optimizer="adam").linear_lr == 0.001
    assert TrainConfig().replace(model="fm").linear_lr == 0.05
    args = build_parser().parse_args(["train", "--model", "fm", "--linear-lr", "0.3"])
    assert train_config(args).linear_lr == 0.3
    with pytest.raises(ConfigError, match="--linear-lr must be a finite number > 0"):
        TrainConfig(model="fm", linear_lr=0.0)
