"""Command-line flags, each declared once with its published name and default, and the
typed configuration the scripts hand to the library (nothing below reads ``args``)."""
import argparse
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from dataset import DATA_MODES, DATASETS, DEFAULT_DATA_DIR, IMAGE_TREES
from models import ARCH_CHOICES, ARCHITECTURES, is_architecture
from prac import SELECTION_RULES
from pruner import MODES, SCOPES, PruneScope
from training import PRECISIONS
from utils import UserError, file_digest

DATASET_NAMES = tuple(DATASETS)
ARCH_NAMES = tuple(ARCHITECTURES)
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
DEFAULT_DECREASING_LR = "91,136"  # the published milestones, made for the default 182 epochs


def add_common_args(parser: argparse.ArgumentParser, lr_default: float, split_file_required: bool = False) -> None:
    """Flags of all three scripts (published names and defaults) plus device and output."""
    general = parser.add_argument_group("general")
    general.add_argument("--data", type=str, default=DEFAULT_DATA_DIR, metavar="DIR",
                         help="location of the data set (default: %(default)s)")
    general.add_argument("--dataset", type=str, default="cifar10", metavar="NAME",
                         help=f"one of {', '.join(DATASET_NAMES)} (default: %(default)s)")
    general.add_argument("--arch", type=str, default="res20s", metavar="ARCH",
                         help=f"one of {ARCH_CHOICES.replace('%', '%%')} (default: %(default)s)")
    general.add_argument("--split_file", type=str, default=None, metavar="NPY",
                         help="permutation of the train-set indices; the last 10%% validate "
                              + ("(required)" if split_file_required else
                                 "(default: npy_files/<dataset>-train-val.npy when its size fits the "
                                 "data set, else identity order)"))
    general.add_argument("--data_mode", choices=DATA_MODES, default="auto",
                         help=f"{' and '.join(IMAGE_TREES)}: hold the images in memory or stream them from "
                              "disk through DataLoader workers; auto streams imagenet and a folder whose "
                              "images would take over a quarter of the RAM (default: auto)")
    general.add_argument("--image_size", type=int, default=None, metavar="PX",
                         help=f"{' and '.join(IMAGE_TREES)}: side of the square training and evaluation "
                              "images (default: 224)")
    general.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                         help="DataLoader workers decoding streamed images; 0 decodes in the main process; "
                              "results do not depend on it (default: the usable CPU cores less one, at most "
                              f"{MAX_DEFAULT_WORKERS}, divided among torchrun's processes on the node)")
    general.add_argument("--seed", type=int, default=None, metavar="N",
                         help="random seed; 0 is a seed (default: unseeded)")
    general.add_argument("--save_dir", type=str, default=None, metavar="DIR",
                         help="folder for checkpoints, results and plots (required)")
    general.add_argument("--gpu", type=int, default=0, metavar="ID", help="CUDA device id (default: 0)")

    training = parser.add_argument_group("training")
    training.add_argument("--batch_size", type=int, default=128, metavar="N", help="batch size (default: 128)")
    training.add_argument("--lr", type=float, default=lr_default, metavar="LR",
                          help="initial learning rate (default: %(default)s)")
    training.add_argument("--momentum", type=float, default=0.9, metavar="M", help="SGD momentum (default: 0.9)")
    training.add_argument("--weight_decay", type=float, default=1e-4, metavar="W",
                          help="weight decay (default: 1e-4)")
    training.add_argument("--epochs", type=int, default=182, metavar="N",
                          help="epochs per round (default: 182)")
    training.add_argument("--warmup", type=int, default=0, metavar="N",
                          help="linear learning-rate warm-up epochs (default: 0)")
    training.add_argument("--print_freq", type=int, default=50, metavar="N",
                          help="log every N steps (default: 50)")
    # None (not the published "91,136") as the parser's default, so that a user who types the
    # default milestones is told when they fall beyond a shortened --epochs.
    training.add_argument("--decreasing_lr", type=str, default=None, metavar="E1,E2",
                          help=f"epochs at which the learning rate is multiplied by 0.1 "
                               f"(default: {DEFAULT_DECREASING_LR})")

    runtime = parser.add_argument_group("runtime (new in this implementation)")
    runtime.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                         help="auto: CUDA device --gpu when present, else CPU (default: auto)")
    runtime.add_argument("--precision", choices=PRECISIONS, default="fp32",
                         help="fp32 (true fp32: TF32 off on CUDA), tf32 (fp32 with TF32 matmuls and "
                              "convolutions on Ampere and newer GPUs), or bf16 autocast for the forward "
                              "pass (default: fp32)")
    runtime.add_argument("--channels_last", choices=("auto", "on", "off"), default="auto",
                         help="channels-last memory format; auto: on with bf16 (default: auto)")
    runtime.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only)")
    runtime.add_argument("--eval_batch_size", type=int, default=None, metavar="N",
                         help="batch size for evaluation and predictions (default: 1000 on CUDA, 128 on "
                              "the CPU, where larger batches fall out of cache and run slower; both for "
                              "32 px images, scaled down by the pixel count for larger ones)")
    runtime.add_argument("--no_progress", action="store_true",
                         help="no progress bar (it is also off when stderr is not a terminal)")
    runtime.add_argument("--trust_checkpoints", action="store_true",
                         help="load checkpoints with full pickle instead of the safe loader")


def add_resume_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("resume")
    group.add_argument("--resume", action="store_true",
                       help="resume from --checkpoint, or without it from the newest checkpoint in --save_dir")
    group.add_argument("--checkpoint", type=str, default=None, metavar="FILE",
                       help="checkpoint file to resume from (default: the newest in --save_dir)")


def add_pruning_args(parser: argparse.ArgumentParser, prune_types: List[str],
                     random_prune: bool) -> None:
    group = parser.add_argument_group("model pruning")
    group.add_argument("--pruning_times", type=int, default=16, metavar="N",
                       help="number of rounds (default: 16)")
    group.add_argument("--rate", type=float, default=0.2, metavar="R",
                       help="fraction of the remaining conv weights pruned per round (default: 0.2)")
    group.add_argument("--prune_type", type=str, default="lt", choices=prune_types,
                       help=f"{' | '.join(prune_types)} (default: lt)")
    if random_prune:
        group.add_argument("--random_prune", action="store_true", help="prune at random, same count")
    group.add_argument("--rewind_epoch", type=int, default=2, metavar="K",
                       help="rewind_lt rewinds to the weights after epoch index K (default: 2)")
    group.add_argument("--train_subset", type=str, default=None, metavar="NPY",
                       help="train only on these dataset indices (e.g. a saved PrAC set), "
                            "epochs scaled by its size")
    scope = parser.add_argument_group("pruning scope (new in this implementation; see docs/controls.md)")
    scope.add_argument("--prune_scope", choices=SCOPES, default="conv",
                       help="which weights are pruned: conv (the published scope: every conv layer) or "
                            "conv_linear (the linear layers too) (default: conv)")
    scope.add_argument("--prune_dense", type=str, default=None, metavar="L1,L2",
                       help="comma-separated layer names (as in the state_dict, e.g. conv1,fc) left dense "
                            "(default: none)")
    scope.add_argument("--prune_mode", choices=MODES, default="global",
                       help="global: --rate of the remaining weights of all pruned layers together, smallest "
                            "first (published); layerwise: --rate of each layer's own remaining weights "
                            "(default: global)")


def add_prac_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Early-Bird and data pruning")
    group.add_argument("--eb_eps", type=float, default=0.08, metavar="EPS",
                       help="Early-Bird mask-distance threshold (default: 0.08)")
    group.add_argument("--queue_length", type=int, default=5, metavar="N",
                       help="Early-Bird distance queue length (default: 5)")
    group.add_argument("--data_prune", type=str, default="zero_out", choices=("zero_out", "constent"),
                       help="zero_out: keep examples forgotten more than --threshold times; "
                            "constent: keep a fixed fraction (default: zero_out)")
    group.add_argument("--threshold", type=int, default=0, metavar="N",
                       help="forgetting-event threshold for zero_out (default: 0)")
    group.add_argument("--data_rate", type=float, default=0.2, metavar="R",
                       help="data pruning rate per round for constent (default: 0.2)")
    group.add_argument("--select", type=str, default="prac", choices=tuple(SELECTION_RULES),
                       help="which examples the next round trains on: prac (the paper's set: forgetting "
                            "part + pruning-aware part), forgetting or pruning_aware (either part alone), "
                            "random or el2n (a random subset / the highest EL2N scores, of the size the PrAC "
                            "set of this run's statistics would have had; random with --match_sizes: of the "
                            "size of another PrAC run's set) (default: prac)")
    group.add_argument("--match_sizes", type=str, default=None, metavar="DIR",
                       help="--select random only (new; see docs/controls.md): each round k >= 1 draws exactly as "
                            "many examples as the PrAC run in DIR trained on in round k (its {k}prac_set.npy, else "
                            "its rounds.csv), the size-matched baseline; without it random takes the size of the "
                            "PrAC set of its own statistics (default: none)")
    group.add_argument("--score_epochs", type=int, default=10, metavar="N",
                       help="el2n: average the scores over the round's first N epochs, or all if fewer "
                            "(default: 10)")


def add_retrain_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ticket")
    group.add_argument("--save_model", action="store_true",
                       help="save the model (checkpoints always hold it here, to allow resuming)")
    group.add_argument("--init_dir", type=str, default=None, metavar="FILE",
                       help="checkpoint whose init_weight entry (or itself) gives the initial weights")
    group.add_argument("--mask_dir", type=str, default=None, metavar="FILE",
                       help="checkpoint whose state_dict holds the *.weight_mask entries")
    group.add_argument("--random_mask", action="store_true",
                       help="the random-mask control (new; see docs/controls.md): instead of --mask_dir's mask, "
                            "a seeded random mask with the same number of weights in every layer, on the "
                            "--init_dir weights (or a fresh initialisation without --init_dir); needs --mask_dir")


@dataclass
class Config:
    """Everything a run needs, validated; saved next to its results."""

    data: str = DEFAULT_DATA_DIR
    dataset: str = "cifar10"
    arch: str = "res20s"
    split_file: Optional[str] = None
    data_mode: str = "auto"
    image_size: Optional[int] = None
    workers: int = DEFAULT_WORKERS
    seed: Optional[int] = None
    save_dir: str = ""
    gpu: int = 0
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 182
    warmup: int = 0
    print_freq: int = 50
    decreasing_lr: List[int] = field(default_factory=lambda: [91, 136])
    device: str = "auto"
    precision: str = "fp32"
    channels_last: str = "auto"
    compile: bool = False
    eval_batch_size: Optional[int] = None
    no_progress: bool = False
    trust_checkpoints: bool = False
    resume: bool = False
    checkpoint: Optional[str] = None
    pruning_times: int = 16
    rate: float = 0.2
    prune_type: str = "lt"
    random_prune: bool = False
    rewind_epoch: int = 2
    train_subset: Optional[str] = None
    prune_scope: str = "conv"
    prune_dense: List[str] = field(default_factory=list)
    prune_mode: str = "global"
    eb_eps: float = 0.08
    queue_length: int = 5
    data_prune: str = "zero_out"
    threshold: int = 0
    data_rate: float = 0.2
    select: str = "prac"
    match_sizes: Optional[str] = None
    score_epochs: int = 10
    save_model: bool = False
    init_dir: Optional[str] = None
    mask_dir: Optional[str] = None
    random_mask: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @property
    def scope(self) -> PruneScope:
        """What pruning removes (--prune_scope, --prune_dense, --prune_mode)."""
        return PruneScope(self.prune_scope, tuple(self.prune_dense), self.prune_mode)

    @property
    def use_channels_last(self) -> bool:
        return self.channels_last == "on" or (self.channels_last == "auto" and self.precision == "bf16")


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


def config_from_args(args: argparse.Namespace) -> Config:
    """Validates the parsed flags and returns a Config; bad values raise one-line UserErrors."""
    values = vars(args).copy()
    milestones_given = values.get("decreasing_lr") is not None
    milestones_text = values["decreasing_lr"] if milestones_given else DEFAULT_DECREASING_LR
    values["decreasing_lr"] = parse_milestones(milestones_text)
    values["prune_dense"] = parse_layer_names(values.get("prune_dense", ""))
    known = Config.__dataclass_fields__
    config = Config(**{k: v for k, v in values.items() if k in known})
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
    if config.lr <= 0:
        raise UserError(f"--lr must be positive, got {config.lr}")
    if config.eb_eps <= 0:
        raise UserError(f"--eb_eps must be positive, got {config.eb_eps}")
    if config.prune_scope not in SCOPES:
        raise UserError(f"unknown --prune_scope {config.prune_scope!r}; choose one of {', '.join(SCOPES)}")
    if config.prune_mode not in MODES:
        raise UserError(f"unknown --prune_mode {config.prune_mode!r}; choose one of {', '.join(MODES)}")
    if config.select not in SELECTION_RULES:
        raise UserError(f"unknown --select {config.select!r}; choose one of {', '.join(SELECTION_RULES)}")
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
# Flags that change what a run computes: resuming with another value would continue a
# different experiment. pruning_times is not here (a resume may extend the rounds), nor
# are flags of speed and output (device, eval_batch_size, print_freq, ...).
RESUME_CHECKED = ("dataset", "arch", "split_file", "data_mode", "image_size", "batch_size", "lr", "momentum",
                  "weight_decay", "epochs", "decreasing_lr", "warmup", "rate", "prune_type", "random_prune",
                  "rewind_epoch", "eb_eps", "queue_length", "data_prune", "threshold", "data_rate", "train_subset",
                  "select", "score_epochs", "precision", "prune_scope", "prune_dense", "prune_mode",
                  "random_mask", "match_sizes")
# What a checkpoint of ours written before a flag existed ran with: the flag's default then.
RESUME_DEFAULTS: Dict[str, Any] = {"prune_scope": "conv", "prune_dense": [], "prune_mode": "global",
                                   "random_mask": False, "match_sizes": None}
# Files compared by content: the same split in another folder is the same split.
DIGESTED = ("split_file", "train_subset")


def digest_key(name: str) -> str:
    return f"{name}_sha256"


def run_identity(config: Config) -> Dict[str, Any]:
    """What a checkpoint should record to let a resume be checked: the whole config plus the
    sha256 of each input file in DIGESTED (``split_file_sha256``, ...)."""
    identity = config.to_dict()
    for name in DIGESTED:
        path = getattr(config, name, None)
        identity[digest_key(name)] = file_digest(path) if path else None
    return identity


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return str(value)


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
