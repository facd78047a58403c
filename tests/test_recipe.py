
import pytest

from conftest import REPO
from ftk.errors import FtkError
from ftk.recipe import load_recipe

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def _local_sources_exist(recipe) -> bool:
    return all(src.startswith("hub:") or (REPO / src).is_file()
               for _, stage in recipe.stage_recipes() for src in stage.data.sources().values())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path, monkeypatch):
    """Schema, task, every data row (when the files are here), LLaMA-Factory's own parser, template
    and dataset names (ftk validate). Recipes for data that lives elsewhere skip the data."""
    from ftk.validate import validate_recipe

    monkeypatch.chdir(REPO)
    r = load_recipe(path)
    assert r.name == path.stem
    data = "full" if _local_sources_exist(r) else "skip"
    shared = [s for _, st in r.stage_recipes() for s in st.data.sources().values() if s.startswith("../shared/")]
    if shared and not (REPO.parent / "shared").exists():
        pytest.skip("reads ../shared/realdata")
    assert all((REPO / s).is_file() for s in shared), f"{path.name} names a missing file in shared/"
    report = validate_recipe(path, data=data)
    assert report.recipe.name == path.stem


def test_unknown_key_names_file_and_key(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text((REPO / "configs" / "agnews_tiny_cpu.yaml").read_text()
                   .replace("  learning_rate:", "  learnin_rate:"))
    with pytest.raises(FtkError) as exc:
        load_recipe(bad)
    assert str(bad) in str(exc.value)
    assert "`train.learnin_rate`: unknown key" in str(exc.value)


def test_all_errors_reported_at_once(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("name: x\ntask: agnews\nbogus: 1\ndata: {prepared_dir: d}\nmodel: {}\n"
                   "train: {num_train_epochs: lots}\n")
    msg = str(pytest.raises(FtkError, load_recipe, bad).value)
    for part in ("`bogus`: unknown key", "`model.name_or_path`: required key is missing", "`train.num_train_epochs`"):
        assert part in msg


def test_extends_and_overrides():
    r = load_recipe(REPO / "configs" / "agnews_tiny_real.yaml",
                    ["train.learning_rate=5e-4", "eval.batch_size=8", "model.trust_remote_code=true"])
    assert r.name == "agnews_tiny_real"
    assert r.train.num_train_epochs == 3          # child wins
    assert r.train.per_device_train_batch_size == 16  # inherited
    assert r.train.learning_rate == 5e-4 and r.eval.batch_size == 8
    assert r.model.trust_remote_code is True


def test_trust_remote_code_off_by_default():
    assert load_recipe(REPO / "configs" / "agnews_llama31_full.yaml").model.trust_remote_code is False


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(FtkError, match="not of the form key=value"):
        load_recipe(REPO / "configs" / "agnews_tiny_cpu.yaml", ["oops"])
    with pytest.raises(FtkError, match="recipe file not found"):
        load_recipe(tmp_path / "none.yaml")


def test_every_shipped_recipe_passes_ftk_schema():
    """`ftk schema` is for editors and CI: every shipped recipe file, `extends:` ones too, passes it,
    and a typo or a full recipe without a required key does not."""
    import jsonschema
    import yaml

    from ftk.recipe import json_schema

    validator = jsonschema.Draft202012Validator(json_schema())
    for path in CONFIGS:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, (path.name, [e.message for e in errors])
    assert list(validator.iter_errors({"extends": "a.yaml", "trian": {}}))
    assert list(validator.iter_errors({"name": "x", "task": "agnews", "data": {}}))  # no model, no extends


def test_a_typo_on_the_command_line_is_blamed_there_with_the_nearest_key(tmp_path):
    from conftest import run_ftk

    recipe = REPO / "configs" / "agnews_tiny_cpu.yaml"
    proc = run_ftk("validate", recipe, "train.learnin_rate=1e-3", "--skip-data")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: command line (over {recipe}): ")
    assert "`train.learnin_rate`: unknown key; did you mean `train.learning_rate`?" in proc.stderr
    child = tmp_path / "child.yaml"  # the same typo in a file: that file, and the same hint
    child.write_text(f"extends: {recipe}\ntrain: {{learnin_rate: 1.0e-3}}\n")
    with pytest.raises(FtkError, match=rf"^{child}: `train.learnin_rate`: unknown key; did you mean `train.learning_rate`\?"):
        load_recipe(child)


def test_lora_keys_a_method_never_reads_are_noted():
    """A twin that extends a LoRA recipe and switches to full fine-tuning or prompt tuning keeps the
    parent's lora_* keys: validate says they do nothing (a note, not an error: extending is fine)."""
    from ftk.validate import validate_recipe

    report = validate_recipe(REPO / "configs" / "disaster_llama3_clshead_lora_tiny.yaml", data="skip", llamafactory=False)
    assert any("`method.lora_alpha" in n and "do nothing with `method.finetuning_type` full" in n for n in report.notes)
    report = validate_recipe(REPO / "configs" / "disaster_llama3_clshead_lora.yaml", data="skip", llamafactory=False)
    assert not any("LoRA keys" in n for n in report.notes)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_a_cpu_recipe_asks_slurm_for_no_gpu_and_a_gpu_recipe_for_its_gpus(path):
    """The shipped CPU recipes (fp32: the tiny twins and the SmolLM2 recipes) must run on a CPU
    partition, where a GPU request is refused; the GPU recipes ask for one GPU per process."""
    from ftk.train.slurm import sbatch_header

    last = load_recipe(path).stage_recipes()[-1][1]
    header = "\n".join(sbatch_header(last.name, last.distributed, "out-%j", "output_key"))
    if last.train.precision == "fp32":
        assert "--gpus" not in header and "--gres" not in header, header
    else:
        assert f"#SBATCH --gpus-per-node={last.distributed.nproc_per_node}" in header


def test_the_cpu_demo_recipe_dry_run_writes_no_gpu_request(tmp_path):
    from conftest import run_ftk

    proc = run_ftk("train", REPO / "configs" / "agnews_tiny_cpu.yaml", "--slurm", "--dry-run",
                   f"runs_dir={tmp_path}", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --nodes=1" in proc.stdout and "--gpus" not in proc.stdout
