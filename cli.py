"""Command-line flags, each declared once with its published name and default, and the
typed configuration the scripts hand to the library (nothing below reads ``args``)."""
import argparse
import os
import sys
from dataclasses import asdict, dataclass, field, make_dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from dataset import DATA_MODES, DATASETS, DEFAULT_DATA_DIR, IMAGE_TREES
from durable import file_digest
from models import ARCH_CHOICES, is_architecture
from prac import SELECTION_RULES
from pruner import MODES, SCOPES, PruneScope
from training import PRECISIONS
from utils import UserError

DATASET_NAMES = tuple(DATASETS)
MIN_IMAGE_SIZE = 8
MAX_DEFAULT_WORKERS = 16


def default_workers() -> int:
    """Streaming workers when --workers is not given: every core this process may use, less
    one for the training process itself, shared among torchrun's processes on this node.
    One worker decodes ~240 ImageNet-sized JPEGs/s at 224 px (bench/RESULTS_streamed.md), so
    a GPU needs many; past 16 a worker's memory costs more than its images are worth."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(MAX_DEFAULT_WORKERS, per_process - 1))


DEFAULT_WORKERS = default_workers()
IMP, SEARCH, RETRAIN = "main_imp.py", "main_PrAC_imp.py", "main_train.py"
ALL_SCRIPTS = (IMP, SEARCH, RETRAIN)
SEARCHES = (IMP, SEARCH)
# The group titles --help and docs/flags.md show, in their order.
GENERAL, TRAINING, RUNTIME, RESUME = "general", "training", "runtime (new in this implementation)", "resume"
PRUNING, SCOPE = "model pruning", "pruning scope (new in this implementation; see docs/controls.md)"
DATA_PRUNING, TICKET = "Early-Bird and data pruning", "ticket"
REQUIRED = "required"  # a shown default that --help words as "(required)"
DEFAULT_SPLIT = "npy_files/<dataset>-train-val.npy when its size fits the data set, else identity order"


def parse_milestones(text: str) -> List[int]:
    """'91,136' -> [91, 136]; an empty string means no decay."""
    if text is None or not str(text).strip():
        return []
    try:
        milestones = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--decreasing_lr {text!r} is not a comma-separated list of epochs, "
                        "e.g. --decreasing_lr 91,136") from None
    if any(m < 0 for m in milestones):
        raise UserError(f"--decreasing_lr {text!r} has a negative epoch")
    return milestones


def parse_layer_names(text: Any) -> List[str]:
    """'fc,conv1' -> ['fc', 'conv1'] (a list passes through); empty means none."""
    if isinstance(text, (list, tuple)):
        return [str(name) for name in text]
    names = [part.strip() for part in str(text or "").split(",") if part.strip()]
    if len(set(names)) != len(names):
        raise UserError(f"--prune_dense {text!r} names a layer twice")
    return names


PerScript = Union[Any, Dict[str, Any]]  # one value, or {script: value} where the scripts differ


def for_script(value: PerScript, script: str) -> Any:
    return value[script] if isinstance(value, dict) else value


@dataclass(frozen=True)
class Flag:
    """One flag, declared once: argparse, Config, the resume check, the sweep, the report's
    grouping and docs/flags.md all read it from FLAGS.

    ``default`` is the Config value (per script where the published scripts differ);
    ``parse`` turns the command-line text into it, and a flag with ``parse`` keeps None as
    its parser default so a value the user typed is told apart from the default.
    ``meaning``: the flag changes what a run computes (a resume must not change it, the report
    never averages runs that differ in it). ``new``: it did not exist when earlier checkpoints
    of ours were written, which therefore ran with its default. ``sweep_owned``: sweep.py sets
    it for every run and refuses it after ``--``.
    """

    name: str
    default: PerScript
    help: PerScript
    group: str
    scripts: Tuple[str, ...] = ALL_SCRIPTS
    type: Optional[Callable[[str], Any]] = None  # None: an on/off switch
    choices: PerScript = None
    metavar: Optional[str] = None
    shown: PerScript = None  # the default as --help words it, where the value alone does not say
    parse: Optional[Callable[[Any], Any]] = None
    meaning: bool = False
    new: bool = False
    sweep_owned: bool = False

    @property
    def switch(self) -> bool:
        return self.type is None

    def config_default(self, script: str = SEARCH) -> Any:
        value = for_script(self.default, script)
        return self.parse(value) if self.parse else value

    def help_text(self, script: str) -> str:
        text = for_script(self.help, script).replace("%", "%%")  # argparse formats help with %
        shown = for_script(self.shown, script)
        if shown is None and not self.switch:
            shown = for_script(self.default, script)
        if shown is None:
            return text
        return f"{text} ({REQUIRED})" if shown == REQUIRED else f"{text} (default: {str(shown).replace('%', '%%')})"

    def add_to(self, group: argparse._ArgumentGroup, script: str) -> None:
        if self.switch:
            group.add_argument(f"--{self.name}", action="store_true", help=self.help_text(script))
            return
        group.add_argument(f"--{self.name}", type=self.type,
                           default=None if self.parse else for_script(self.default, script),
                           choices=for_script(self.choices, script), metavar=self.metavar,
                           help=self.help_text(script))


DEFAULT_DECREASING_LR = "91,136"  # the published milestones, made for the default 182 epochs
FLAGS: Tuple[Flag, ...] = (
    # ------------------------------------------------------------------ general
    Flag("data", DEFAULT_DATA_DIR, "location of the data set", GENERAL, type=str, metavar="DIR"),
    Flag("dataset", "cifar10", f"one of {', '.join(DATASET_NAMES)}", GENERAL, type=str, metavar="NAME",
         meaning=True),
    Flag("arch", "res20s", f"one of {ARCH_CHOICES}", GENERAL, type=str, metavar="ARCH", meaning=True),
    Flag("split_file", None, "permutation of the train-set indices (npy_files/ has one per data set); the last "
         "10% validate", GENERAL, type=str, metavar="NPY", meaning=True,
         shown={IMP: DEFAULT_SPLIT, SEARCH: REQUIRED, RETRAIN: DEFAULT_SPLIT}),
    Flag("data_mode", "auto", f"{' and '.join(IMAGE_TREES)}: hold the images in memory or stream them from disk "
         "through DataLoader workers; auto streams imagenet and a folder whose images would take over a quarter "
         "of the RAM", GENERAL, type=str, choices=DATA_MODES, meaning=True),
    Flag("image_size", None, f"{' and '.join(IMAGE_TREES)}: side of the square training and evaluation images",
         GENERAL, type=int, metavar="PX", shown="224", meaning=True),
    Flag("workers", DEFAULT_WORKERS, "DataLoader workers decoding streamed images; 0 decodes in the main process; "
         "results do not depend on it", GENERAL, type=int, metavar="N",
         shown=f"the usable CPU cores less one, at most {MAX_DEFAULT_WORKERS}, divided among torchrun's processes "
               "on the node"),
    Flag("seed", None, "random seed; 0 is a seed", GENERAL, type=int, metavar="N", shown="unseeded",
         sweep_owned=True),
    Flag("save_dir", "", "folder for checkpoints, results and plots", GENERAL, type=str, metavar="DIR",
         shown=REQUIRED, sweep_owned=True),
    Flag("gpu", 0, "CUDA device id", GENERAL, type=int, metavar="ID"),
    # ------------------------------------------------------------------ training
    Flag("batch_size", 128, "batch size", TRAINING, type=int, metavar="N", meaning=True),
    Flag("lr", {IMP: 0.01, SEARCH: 0.1, RETRAIN: 0.1}, "initial learning rate", TRAINING, type=float,
         metavar="LR", meaning=True),
    Flag("momentum", 0.9, "SGD momentum", TRAINING, type=float, metavar="M", meaning=True),
    Flag("weight_decay", 1e-4, "weight decay", TRAINING, type=float, metavar="W", shown="1e-4", meaning=True),
    Flag("epochs", 182, "epochs per round", TRAINING, type=int, metavar="N", meaning=True),
    Flag("warmup", 0, "linear learning-rate warm-up epochs", TRAINING, type=int, metavar="N", meaning=True),
    Flag("print_freq", 50, "log every N steps", TRAINING, type=int, metavar="N"),
    Flag("decreasing_lr", DEFAULT_DECREASING_LR, "epochs at which the learning rate is multiplied by 0.1",
         TRAINING, type=str, metavar="E1,E2", parse=parse_milestones, meaning=True),
    # ------------------------------------------------------------------ runtime
    Flag("device", "auto", "auto: CUDA device --gpu when present, else CPU", RUNTIME, type=str,
         choices=("auto", "cpu", "cuda")),
    Flag("precision", "fp32", "fp32 (true fp32: TF32 off on CUDA), tf32 (fp32 with TF32 matmuls and convolutions "
         "on Ampere and newer GPUs), or bf16 autocast for the forward pass", RUNTIME, type=str, choices=PRECISIONS,
         meaning=True),
    Flag("channels_last", "auto", "channels-last memory format; auto: on with bf16", RUNTIME, type=str,
         choices=("auto", "on", "off")),
    Flag("compile", False, "torch.compile the model (CUDA only)", RUNTIME),
    Flag("eval_batch_size", None, "batch size for evaluation and predictions", RUNTIME, type=int, metavar="N",
         shown="1000 on CUDA, 128 on the CPU, where larger batches fall out of cache and run slower; both for "
               "32 px images, scaled down by the pixel count for larger ones"),
    Flag("no_progress", False, "no progress bar (it is also off when stderr is not a terminal)", RUNTIME),
    Flag("trust_checkpoints", False, "load checkpoints with full pickle instead of the safe loader", RUNTIME),
    # ------------------------------------------------------------------ resume
    Flag("resume", False, "resume from --checkpoint, or without it from the newest checkpoint in --save_dir",
         RESUME, sweep_owned=True),
    Flag("checkpoint", None, "checkpoint file to resume from", RESUME, type=str, metavar="FILE",
         shown="the newest in --save_dir", sweep_owned=True),
    # ------------------------------------------------------------------ model pruning
    Flag("pruning_times", 16, "number of rounds", PRUNING, SEARCHES, type=int, metavar="N"),
    Flag("rate", 0.2, "fraction of the remaining conv weights pruned per round", PRUNING, SEARCHES, type=float,
         metavar="R", meaning=True),
    Flag("prune_type", "lt", {IMP: "lt | pt | rewind_lt", SEARCH: "lt | rewind_lt"}, PRUNING, SEARCHES, type=str,
         choices={IMP: ("lt", "pt", "rewind_lt"), SEARCH: ("lt", "rewind_lt")}, meaning=True),
    Flag("random_prune", False, "prune at random, same count", PRUNING, (IMP,), meaning=True),
    Flag("rewind_epoch", 2, "rewind_lt rewinds to the weights after epoch index K", PRUNING, SEARCHES, type=int,
         metavar="K", meaning=True),
    Flag("train_subset", None, "train only on these dataset indices (e.g. a saved PrAC set), epochs scaled by its "
         "size", PRUNING, SEARCHES, type=str, metavar="NPY", meaning=True),
    Flag("prune_scope", "conv", "which weights are pruned: conv (the published scope: every conv layer) or "
         "conv_linear (the linear layers too)", SCOPE, SEARCHES, type=str, choices=SCOPES, meaning=True, new=True),
    Flag("prune_dense", "", "comma-separated layer names (as in the state_dict, e.g. conv1,fc) left dense", SCOPE,
         SEARCHES, type=str, metavar="L1,L2", shown="none", parse=parse_layer_names, meaning=True, new=True),
    Flag("prune_mode", "global", "global: --rate of the remaining weights of all pruned layers together, smallest "
         "first (published); layerwise: --rate of each layer's own remaining weights", SCOPE, SEARCHES, type=str,
         choices=MODES, meaning=True, new=True),
    # ------------------------------------------------------------------ Early-Bird and data pruning
    Flag("eb_eps", 0.08, "Early-Bird mask-distance threshold", DATA_PRUNING, (SEARCH,), type=float, metavar="EPS",
         meaning=True),
    Flag("queue_length", 5, "Early-Bird distance queue length", DATA_PRUNING, (SEARCH,), type=int, metavar="N",
         meaning=True),
    Flag("data_prune", "zero_out", "zero_out: keep examples forgotten more than --threshold times; constent: keep "
         "a fixed fraction", DATA_PRUNING, (SEARCH,), type=str, choices=("zero_out", "constent"), meaning=True),
    Flag("threshold", 0, "forgetting-event threshold for zero_out", DATA_PRUNING, (SEARCH,), type=int, metavar="N",
         meaning=True),
    Flag("data_rate", 0.2, "data pruning rate per round for constent", DATA_PRUNING, (SEARCH,), type=float,
         metavar="R", meaning=True),
    Flag("select", "prac", "which examples the next round trains on: prac (the paper's set: forgetting part + "
         "pruning-aware part), forgetting or pruning_aware (either part alone), random or el2n (a random subset / "
         "the highest EL2N scores, of the size the PrAC set of this run's statistics would have had; random with "
         "--match_sizes: of the size of another PrAC run's set)", DATA_PRUNING, (SEARCH,), type=str,
         choices=tuple(SELECTION_RULES), meaning=True, sweep_owned=True),
    Flag("match_sizes", None, "--select random only (new; see docs/controls.md): each round k >= 1 draws exactly "
         "as many examples as the PrAC run in DIR trained on in round k (its {k}prac_set.npy, else its rounds.csv), "
         "the size-matched baseline; without it random takes the size of the PrAC set of its own statistics",
         DATA_PRUNING, (SEARCH,), type=str, metavar="DIR", shown="none", meaning=True, new=True, sweep_owned=True),
    Flag("score_epochs", 10, "el2n: average the scores over the round's first N epochs, or all if fewer",
         DATA_PRUNING, (SEARCH,), type=int, metavar="N", meaning=True),
    # ------------------------------------------------------------------ ticket
    Flag("save_model", False, "save the model (checkpoints always hold it here, to allow resuming)", TICKET,
         (RETRAIN,)),
    Flag("init_dir", None, "checkpoint whose init_weight entry (or itself) gives the initial weights", TICKET,
         (RETRAIN,), type=str, metavar="FILE", sweep_owned=True),
    Flag("mask_dir", None, "checkpoint whose state_dict holds the *.weight_mask entries", TICKET, (RETRAIN,),
         type=str, metavar="FILE", sweep_owned=True),
    Flag("random_mask", False, "the random-mask control (new; see docs/controls.md): instead of --mask_dir's mask, "
         "a seeded random mask with the same number of weights in every layer, on the --init_dir weights (or a "
         "fresh initialisation without --init_dir); needs --mask_dir", TICKET, (RETRAIN,), meaning=True, new=True,
         sweep_owned=True),
)
FLAG_BY_NAME: Dict[str, Flag] = {flag.name: flag for flag in FLAGS}
# Flags that change what a run computes: resuming with another value would continue a
# different experiment. pruning_times is not among them (a resume may extend the rounds), nor
# are flags of speed and output (device, eval_batch_size, print_freq, ...).
RESUME_CHECKED = tuple(flag.name for flag in FLAGS if flag.meaning)
# What a checkpoint of ours written before a flag existed ran with: the flag's default.
RESUME_DEFAULTS: Dict[str, Any] = {flag.name: flag.config_default() for flag in FLAGS if flag.new}
SWEEP_OWNED = tuple(f"--{flag.name}" for flag in FLAGS if flag.sweep_owned)


DESCRIPTIONS = {IMP: "Iterative magnitude pruning (IMP)", SEARCH: "PrAC ticket finding",
                RETRAIN: "Retrain a lottery ticket"}


def build_parser(script: str) -> argparse.ArgumentParser:
    """``script``'s parser: its flags from FLAGS, in their groups and order."""
    parser = argparse.ArgumentParser(description=DESCRIPTIONS[script])
    groups: Dict[str, argparse._ArgumentGroup] = {}
    for flag in FLAGS:
        if script in flag.scripts:
            if flag.group not in groups:
                groups[flag.group] = parser.add_argument_group(flag.group)
            flag.add_to(groups[flag.group], script)
    return parser


def _config_field(flag: Flag) -> Tuple[str, Any, Any]:
    """(name, type, default) of the flag's Config field: the parsed type (a list for a flag
    with ``parse``, bool for a switch), Optional where the default is None."""
    default = flag.config_default()
    if isinstance(default, list):
        return flag.name, List[Any], field(default_factory=lambda: list(default))
    kind: Any = bool if flag.switch else flag.type
    return flag.name, Optional[kind] if default is None else kind, field(default=default)


class _ConfigMethods:
    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @property
    def scope(self) -> PruneScope:
        """What pruning removes (--prune_scope, --prune_dense, --prune_mode)."""
        return PruneScope(self.prune_scope, tuple(self.prune_dense), self.prune_mode)  # type: ignore[attr-defined]

    @property
    def use_channels_last(self) -> bool:
        channels_last, precision = self.channels_last, self.precision  # type: ignore[attr-defined]
        return channels_last == "on" or (channels_last == "auto" and precision == "bf16")


# Everything a run needs, validated, saved next to its results: one field per flag in FLAGS,
# with main_PrAC_imp.py's default (the library's; a script's parser gives its own).
Config = make_dataclass("Config", [_config_field(flag) for flag in FLAGS], bases=(_ConfigMethods,))
Config.__doc__ = "Everything a run needs, validated; saved next to its results. One field per flag in cli.FLAGS."


def parse_flags(script: str, argv: Optional[Sequence[str]] = None) -> "Config":
    """``script``'s command line as a validated Config (what each script's main does)."""
    args = build_parser(script).parse_args(argv)
    for flag in FLAGS:
        if script in flag.scripts and flag.name != "save_dir" and for_script(flag.shown, script) == REQUIRED \
                and getattr(args, flag.name) is None:
            raise UserError(f"{script} needs --{flag.name}: {for_script(flag.help, script)}")
    return config_from_args(args)


def config_from_args(args: argparse.Namespace) -> "Config":
    """Validates the parsed flags and returns a Config; bad values raise one-line UserErrors."""
    values = {name: value for name, value in vars(args).items() if name in FLAG_BY_NAME}
    milestones_given = values.get("decreasing_lr") is not None
    for name, value in values.items():
        flag = FLAG_BY_NAME[name]
        if flag.parse:
            values[name] = flag.parse(flag.default if value is None else value)
    config = Config(**values)
    validate(config)
    for warning in config_warnings(config, milestones_given=milestones_given):
        print(f"warning: {warning}", file=sys.stderr)
    return config


def config_warnings(config: Config, milestones_given: bool = True) -> List[str]:
    """Settings that are legal (the published scripts accept them) but probably not meant;
    each is one line, and the run goes on.

    Milestones beyond ``--epochs`` are reported when the user gave them
    (``milestones_given``): the default ones belong to the default 182 epochs, and a run
    that only shortens --epochs (a quick test) is not warned about them.
    """
    warnings = []
    late = [m for m in config.decreasing_lr if m >= config.epochs]
    if late and milestones_given:
        warnings.append(f"--decreasing_lr milestone(s) {','.join(map(str, late))} are at or beyond "
                        f"--epochs {config.epochs}, so those learning-rate drops never happen")
    return warnings


def validate(config: Config) -> None:
    if not config.save_dir:
        raise UserError("--save_dir is required: the folder where checkpoints and results go")
    if config.dataset not in DATASET_NAMES:
        raise UserError(f"unknown --dataset {config.dataset!r}; choose one of {', '.join(DATASET_NAMES)}")
    if not is_architecture(config.arch):
        raise UserError(f"unknown --arch {config.arch!r}; choose one of {ARCH_CHOICES}")
    if not 0.0 < config.rate < 1.0:
        raise UserError(f"--rate {config.rate} is outside (0, 1): it is the fraction of remaining "
                        "weights pruned per round, e.g. 0.2")
    if not 0.0 <= config.data_rate < 1.0:
        raise UserError(f"--data_rate {config.data_rate} is outside [0, 1)")
    for name in ("batch_size", "epochs", "pruning_times", "queue_length", "eval_batch_size", "print_freq",
                 "score_epochs"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(config, name)}")
    if config.image_size is not None and config.dataset not in IMAGE_TREES:
        raise UserError(f"--image_size applies to --dataset {' and '.join(IMAGE_TREES)}; "
                        f"{config.dataset} has its own size")
    if config.image_size is not None and config.image_size < MIN_IMAGE_SIZE:
        raise UserError(f"--image_size must be at least {MIN_IMAGE_SIZE}, got {config.image_size}")
    for name in ("warmup", "rewind_epoch", "threshold", "workers"):
        if getattr(config, name) < 0:
            raise UserError(f"--{name} must not be negative, got {getattr(config, name)}")
    if config.warmup > config.epochs:
        raise UserError(f"--warmup {config.warmup} is longer than --epochs {config.epochs}: the learning "
                        "rate would never reach --lr")
    for name in ("lr", "eb_eps"):
        if getattr(config, name) <= 0:
            raise UserError(f"--{name} must be positive, got {getattr(config, name)}")
    for name, choices in (("prune_scope", SCOPES), ("prune_mode", MODES), ("select", tuple(SELECTION_RULES))):
        if getattr(config, name) not in choices:
            raise UserError(f"unknown --{name} {getattr(config, name)!r}; choose one of {', '.join(choices)}")
    if config.prune_type == "rewind_lt" and config.rewind_epoch >= config.epochs:
        raise UserError(f"--rewind_epoch {config.rewind_epoch} needs more than {config.epochs} "
                        "--epochs for rewind_lt: the rewind point is after epoch index rewind_epoch")
    if config.match_sizes is not None:
        if config.select != "random":
            raise UserError(f"--match_sizes applies to --select random, not --select {config.select}")
        if not os.path.isdir(config.match_sizes):
            raise UserError(f"--match_sizes {config.match_sizes} is not a folder: give the --save_dir of the "
                            "main_PrAC_imp.py run whose set sizes to match")
        if os.path.abspath(config.match_sizes) == os.path.abspath(config.save_dir):
            raise UserError("--match_sizes must name another run's folder, not this run's --save_dir")
    if config.random_mask and not config.mask_dir:
        raise UserError("--random_mask needs --mask_dir: the ticket whose per-layer weight counts the random "
                        "mask keeps")
    for name in ("split_file", "train_subset", "init_dir", "mask_dir", "checkpoint"):
        path = getattr(config, name)
        if path and (name != "checkpoint" or config.resume) and not os.path.isfile(path):
            raise UserError(f"--{name} {path} does not exist")


# ----------------------------------------------------------------------------- resuming
# Files compared by content: the same split in another folder is the same split.
DIGESTED = ("split_file", "train_subset")


def digest_key(name: str) -> str:
    return f"{name}_sha256"


def run_identity(config: Config) -> Dict[str, Any]:
    """What a checkpoint should record to let a resume be checked: the whole config plus the
    sha256 of each input file in DIGESTED (``split_file_sha256``, ...)."""
    identity = config.to_dict()
    for name in DIGESTED:
        identity[digest_key(name)] = file_digest(identity[name]) if identity[name] else None
    return identity


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def _same(saved: Any, now: Any) -> bool:
    if isinstance(saved, (list, tuple)) or isinstance(now, (list, tuple)):
        return list(saved or []) == list(now or [])
    if isinstance(saved, (int, float)) and isinstance(now, (int, float)) and not isinstance(saved, bool):
        return float(saved) == float(now)
    return saved == now


def resume_mismatches(saved_config: Mapping[str, Any], config: Config, saved_script: Optional[str],
                      script: str) -> List[str]:
    """The settings in which a checkpoint's run differs from this one, one string each
    (e.g. "--arch: checkpoint res20s, now res56s"); empty when the resume may go on.

    ``saved_config`` is what the checkpoint recorded (best: :func:`run_identity`); settings
    it does not hold are skipped, so published checkpoints (which hold none) pass. Input
    files are compared by their sha256 when the checkpoint holds one, else by path.
    """
    mismatches = []
    if saved_script and os.path.basename(saved_script) != os.path.basename(script):
        mismatches.append(f"script: checkpoint written by {os.path.basename(saved_script)}, "
                          f"now {os.path.basename(script)}")
    if saved_config:  # ours (published checkpoints record no settings)
        saved_config = {**RESUME_DEFAULTS, **saved_config}
    for name in RESUME_CHECKED:
        if name not in saved_config or not hasattr(config, name):
            continue
        saved, now = saved_config[name], getattr(config, name)
        if name in DIGESTED and saved_config.get(digest_key(name)) is not None:
            saved_digest = saved_config[digest_key(name)]
            if not now:
                mismatches.append(f"--{name}: checkpoint {_shown(saved)} ({_short(saved_digest)}), now none")
                continue
            try:
                now_digest = file_digest(now)
            except UserError:
                now_digest = None
            if now_digest != saved_digest:
                mismatches.append(f"--{name}: checkpoint {_shown(saved)} ({_short(saved_digest)}), now {now} "
                                  f"({_short(now_digest) if now_digest else 'unreadable'})")
            continue
        if not _same(saved, now):
            mismatches.append(f"--{name}: checkpoint {_shown(saved)}, now {_shown(now)}")
    return mismatches


def _short(digest: str) -> str:
    return digest[:len("sha256:") + 12]
