"""The recipe of a ``cnnkit train`` run and ``--resume``: the options that decide a run's
result, stored in RUN/recipe.json before the first epoch, checked when read back (types,
the parser's own ranges), applied to a resumed run (contradicting options refused, a
longer run by --epochs), and the data the run must still see."""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path

from ..errors import CheckpointError, UsageError
from ..io.checkpoint import load_checkpoint
from ..train.run_folder import RECIPE_FILE, holds_a_run, read_recipe

__all__ = [
    "RECIPE_KEYS", "PATH_KEYS", "RECIPE_TYPES", "absolute", "same", "flag", "shown", "resume_command", "stored_run",
    "check_recipe", "refused", "apply_recipe", "check_same_data",
]


# The options that decide a run's result (argparse dest names): stored, resolved, in
# RUN/recipe.json before the first epoch; `--resume` takes them from there. Paths are stored
# absolute. The other options (--out, --workers, --cache, --tensorboard) change how the run
# goes, not what it computes.
RECIPE_KEYS = (
    "model", "dataset", "data", "data_dir", "val_split", "task", "threshold", "positive_class", "image_size",
    "in_channels", "resize", "epochs", "batch_size", "optimizer", "lr", "seed", "augment", "crop_scale",
    "color_jitter", "weights", "freeze", "backbone_lr_scale", "limit", "lr_scaling", "warmup_epochs", "sync_bn",
    "normalize",
)
PATH_KEYS = ("data", "data_dir")  # and --weights: a path, or a weights name (train._weights_value)


def absolute(value):
    return str(Path(value).expanduser().resolve()) if value is not None else None


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    return a == b


def flag(key: str) -> str:
    return "MODEL" if key == "model" else "--" + key.replace("_", "-")


def shown(value) -> str:
    if value is None:
        return "not given"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def resume_command(out: Path) -> str:
    return f"cnnkit train --out {shlex.quote(str(out))} --resume"


def stored_run(out: Path, last: Path, options: dict[str, argparse.Action]):
    """(recipe, last checkpoint or None) of the run in ``out``, for --resume; ``options``: the
    options of ``cnnkit train`` by dest, whose types check the stored values."""
    ckpt = None
    if last.exists():
        try:
            ckpt = load_checkpoint(last)
        except CheckpointError as e:
            raise CheckpointError(f"--resume: {e}") from None
    recipe = read_recipe(out)
    from_file = recipe is not None
    if recipe is None and ckpt is not None:  # a run from before recipe.json: what its checkpoint says
        recipe = dict(ckpt.extra.get("recipe", {}))
        recipe.setdefault("model", ckpt.model_name)
        if str(ckpt.extra.get("dataset", "")).startswith("folder:"):
            recipe.setdefault("data", ckpt.extra["dataset"][len("folder:"):])
        elif ckpt.extra.get("dataset"):
            recipe.setdefault("dataset", ckpt.extra["dataset"])
    if not recipe:
        present = holds_a_run(out)
        raise UsageError(f"--resume: {out} holds no run to resume (no recipe.json or last.safetensors"
                         f"{'; it has ' + ', '.join(present) if present else ''})")
    check_recipe(recipe, out / RECIPE_FILE if from_file else last, options)
    if ckpt is not None and recipe.get("model") not in (None, ckpt.model_name):
        raise CheckpointError(f"--resume: {last} holds model {ckpt.model_name!r}, but the run's recipe says "
                              f"{recipe['model']!r}; the run folder was mixed up")
    return recipe, ckpt


# The JSON types of the stored options (None: not given); a recipe.json edited by hand or
# damaged is refused by name instead of failing somewhere later.
RECIPE_TYPES = {
    "model": str, "dataset": str, "data": str, "data_dir": str, "task": str, "positive_class": str,
    "resize": str, "optimizer": str, "freeze": (str, int), "weights": str,
    "epochs": int, "batch_size": int, "seed": int, "limit": int, "image_size": int, "in_channels": int,
    "val_split": (int, float), "threshold": (int, float), "lr": (int, float), "crop_scale": (int, float),
    "color_jitter": (int, float), "backbone_lr_scale": (int, float), "augment": bool,
    "train_images": int, "val_images": int, "classes": list, "extended": list,
    "ranks": int, "normalize": str, "lr_scaling": str, "warmup_epochs": (int, float), "sync_bn": bool,
}


def check_recipe(recipe: dict, source: Path, options: dict[str, argparse.Action]) -> None:
    """Refuse, by file and key, a stored recipe value no run stores: a wrong JSON type, or a value the
    parser refuses (out of range, not a choice). The ranges are the parser's own argument types."""
    hint = ("the file was edited or damaged (fix or delete it: the last checkpoint holds a copy of the recipe)"
            if source.name == RECIPE_FILE else "the recipe the checkpoint stores cannot be resumed")
    for key, kind in RECIPE_TYPES.items():
        value = recipe.get(key)
        if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
            raise UsageError(f"{source}: {key} is {value!r}, which no run stores; {hint}")
    for key in RECIPE_KEYS:
        value, option = recipe.get(key), options.get(key)
        expected = None if value is None or option is None else refused(option, value)
        if expected is not None:
            # (JSON has no inf: a float past the largest, 1e309, reads as inf)
            shown = f"{value!r} (a number too large for a float)" if value in (math.inf, -math.inf) else repr(value)
            raise UsageError(f"{source}: {key} is {shown}, expected {expected} (as {flag(key)} takes); {hint}")


def refused(option: argparse.Action, value) -> str | None:
    """What ``option`` expects, if it refuses the stored ``value`` (a JSON value of the right type); else None."""
    if option.choices is not None and value not in option.choices:
        return "one of " + ", ".join(map(str, option.choices))
    if option.type is None:
        return None
    try:  # the parser's own type, given the value as text (repr: floats round-trip, inf stays inf)
        option.type(value if isinstance(value, str) else repr(value))
    except argparse.ArgumentTypeError as e:
        return getattr(option.type, "expected", None) or str(e)
    return None


def apply_recipe(args, recipe: dict, explicit: dict, done: int, out: Path) -> int | None:
    """Set ``args`` to the stored recipe; refuse contradicting options; return new epochs if extended."""
    conflicts = []
    for key, given in explicit.items():
        if key == "epochs" or key not in recipe:
            continue
        if not same(given, recipe[key]):
            conflicts.append(f"{flag(key)} {shown(given)} (the run has {shown(recipe[key])})")
    if conflicts:
        raise UsageError(
            f"--resume continues the run in {out} exactly as it was started, but {'; '.join(conflicts)}. "
            f"Drop {'that option' if len(conflicts) == 1 else 'those options'} to continue it, or start a new "
            "run with another --out (or --overwrite)"
        )
    for key in RECIPE_KEYS:
        if key in recipe:
            setattr(args, key, recipe[key])
    planned = int(recipe.get("epochs") or 0)
    wanted = explicit.get("epochs")
    if wanted is not None and wanted != planned:
        if wanted <= done:
            raise UsageError(f"--epochs {wanted}: the run in {out} has already trained {done} epochs; "
                             f"give more than {done} to train it longer")
        args.epochs = wanted
        return wanted
    if planned and done >= planned:
        raise UsageError(
            f"the run in {out} has finished its {planned} epochs: nothing to resume. To train it longer, add "
            f"--epochs N with N > {planned} (the one-cycle schedule is re-planned over N epochs); to look at it: "
            f"cnnkit evaluate {shlex.quote(str(out / 'best.safetensors'))}"
        )
    return None


def check_same_data(recipe: dict, facts: dict, out: Path) -> None:
    """Refuse to resume on data that is not the data the run started with."""
    changed = [f"{key.replace('_', ' ')}: {recipe[key]!r} then, {facts[key]!r} now"
               for key in ("classes", "train_images", "val_images") if key in recipe and recipe[key] != facts[key]]
    if changed:
        raise UsageError(f"--resume: the data of the run in {out} changed since it started ({'; '.join(changed)}); "
                         "resuming would not continue the same run. Start a new one with another --out "
                         "(or --overwrite)")
