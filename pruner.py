"""Global unstructured magnitude pruning of conv weights, rewinding, and Early-Bird.

Masks use ``torch.nn.utils.prune``'s reparametrisation: a pruned conv holds
``weight_orig`` and ``weight_mask`` and a model's mask is the dict of its
``<module>.weight_mask`` entries. Only ``nn.Conv2d`` weights are ever pruned.
"""
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils import prune

from utils import UserError

Mask = Dict[str, torch.Tensor]
MASK_SUFFIX = ".weight_mask"


def conv_layers(model: nn.Module) -> List[Tuple[str, nn.Conv2d]]:
    """The prunable layers: every ``nn.Conv2d``, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _effective_weight(conv: nn.Conv2d) -> torch.Tensor:
    # A pruned module's ``.weight`` attribute is refreshed only by a forward pass, so after
    # an optimiser step it is stale; recompute it from the parameter and the mask.
    if prune.is_pruned(conv) and hasattr(conv, "weight_mask"):
        return conv.weight_orig.detach() * conv.weight_mask
    return conv.weight.detach()


def _current_mask(conv: nn.Conv2d) -> torch.Tensor:
    if hasattr(conv, "weight_mask"):
        return conv.weight_mask.detach()
    return torch.ones_like(conv.weight, dtype=torch.float32)


ImportanceScore = Callable[[torch.Tensor], torch.Tensor]


def magnitude_score(weights: torch.Tensor) -> torch.Tensor:
    """L1 importance: smallest |w| is pruned first."""
    return weights.abs()


class RandomScore:
    """Random importance, for random pruning with the same count as magnitude pruning."""

    def __init__(self, generator: Optional[torch.Generator] = None):
        self.generator = generator

    def __call__(self, weights: torch.Tensor) -> torch.Tensor:
        return torch.rand(weights.shape, generator=self.generator, device="cpu").to(weights.device)


def _global_mask(model: nn.Module, rate: float, score: ImportanceScore) -> Mask:
    """The mask that removes ``rate`` of the still-unpruned conv weights, lowest score first.

    Mirrors ``prune.global_unstructured``: scores of all conv weights are concatenated in
    module order, the count is ``round(rate * unpruned)`` and the lowest are found with
    ``topk`` among the unpruned entries only. Nothing in the model is changed.
    """
    layers = conv_layers(model)
    if not layers:
        raise UserError("the model has no conv layers to prune")
    with torch.no_grad():
        weights = torch.cat([_effective_weight(m).flatten() for _, m in layers])
        masks = torch.cat([_current_mask(m).flatten() for _, m in layers]).to(weights.dtype)
        alive = torch.nonzero(masks == 1).flatten()
        n_prune = round(rate * alive.numel())
        new_mask = masks.clone()
        if n_prune > 0:
            scores = score(weights[alive])
            lowest = torch.topk(scores, k=n_prune, largest=False).indices
            new_mask[alive[lowest]] = 0
    result: Mask = {}
    offset = 0
    for name, module in layers:
        n = module.weight.numel()
        result[name + MASK_SUFFIX] = new_mask[offset:offset + n].view_as(module.weight).clone()
        offset += n
    return result


def candidate_mask(model: nn.Module, rate: float) -> Mask:
    """The mask that pruning ``rate`` more by magnitude would give now (model untouched)."""
    return _global_mask(model, rate, magnitude_score)


def global_magnitude_prune(model: nn.Module, rate: float) -> None:
    """Prunes ``rate`` of the still-unpruned conv weights, smallest |w| across all layers."""
    apply_mask(model, candidate_mask(model, rate))


def random_prune(model: nn.Module, rate: float, generator: Optional[torch.Generator] = None) -> None:
    """Prunes the same count as :func:`global_magnitude_prune`, chosen at random."""
    apply_mask(model, _global_mask(model, rate, RandomScore(generator)))


def extract_mask(state_dict: Mapping[str, torch.Tensor]) -> Mask:
    """The ``*.weight_mask`` entries of a (pruned) state_dict."""
    return {k: v.detach().clone() for k, v in state_dict.items() if k.endswith(MASK_SUFFIX)}


def check_mask(model: nn.Module, mask: Mapping[str, torch.Tensor], source: str = "the mask") -> None:
    """Raises a one-line UserError unless ``mask`` is binary and fits this model's convs."""
    expected = {name + MASK_SUFFIX: m.weight.shape for name, m in conv_layers(model)}
    missing = [k for k in expected if k not in mask]
    extra = [k for k in mask if k not in expected]
    if missing or extra:
        detail = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise UserError(f"{source} does not fit this architecture: it has {len(mask)} conv masks, "
                        f"the model has {len(expected)} ({detail}); was it made with another --arch?")
    for key, shape in expected.items():
        if tuple(mask[key].shape) != tuple(shape):
            raise UserError(f"{source} does not fit this architecture: {key} has shape "
                            f"{tuple(mask[key].shape)}, the model needs {tuple(shape)}; "
                            "was it made with another --arch or data set?")
        values = mask[key]
        if not bool(((values == 0) | (values == 1)).all()):
            raise UserError(f"{source} is not binary: {key} holds values other than 0 and 1")


def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Applies a checked mask with ``prune.custom_from_mask`` (multiplies with any present)."""
    check_mask(model, mask)
    for name, module in conv_layers(model):
        layer_mask = mask[name + MASK_SUFFIX].to(device=module.weight.device, dtype=module.weight.dtype)
        prune.custom_from_mask(module, "weight", layer_mask)


def remove_masks(model: nn.Module) -> None:
    """Folds masks into the weights and drops the reparametrisation."""
    for _, module in conv_layers(model):
        if prune.is_pruned(module):
            prune.remove(module, "weight")


def rewind(model: nn.Module, weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> None:
    """Loads dense ``weights`` and applies ``mask``: surviving weights equal the rewind point."""
    check_mask(model, mask)
    remove_masks(model)
    model.load_state_dict(dense_state_dict(weights))
    apply_mask(model, mask)


def dense_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A state_dict without pruning reparametrisation: ``weight_orig`` becomes ``weight``
    (unmasked) and masks are dropped."""
    dense = {}
    for key, value in state_dict.items():
        if key.endswith(MASK_SUFFIX):
            continue
        if key.endswith(".weight_orig"):
            key = key[: -len("_orig")]
        dense[key] = value
    return dense


def remaining_weights(model: nn.Module) -> float:
    """Percentage of conv weights that are non-zero."""
    total = 0
    nonzero = 0
    for _, module in conv_layers(model):
        weight = _effective_weight(module)
        total += weight.numel()
        nonzero += int(torch.count_nonzero(weight))
    return 100.0 * nonzero / total


def mask_size(mask: Mapping[str, torch.Tensor]) -> int:
    """Number of ones (unpruned weights) in a mask."""
    return int(sum(int(m.sum()) for m in mask.values()))


def conv_weight_count(model: nn.Module) -> int:
    return sum(m.weight.numel() for _, m in conv_layers(model))


def unpruned_count(model: nn.Module) -> int:
    """Conv weights not removed by a mask (all of them before the first pruning)."""
    return sum(int(_current_mask(m).sum()) for _, m in conv_layers(model))


def mask_distance(mask_a: Mapping[str, torch.Tensor], mask_b: Mapping[str, torch.Tensor],
                  remaining: float) -> float:
    """Hamming distance between two masks divided by ``remaining`` (unpruned weights)."""
    differing = sum(int((mask_a[k] != mask_b[k]).sum()) for k in mask_a)
    return differing / remaining


class EarlyBird:
    """Early-Bird stop rule (You et al. 2020) as the published PrAC scripts apply it.

    Each epoch's candidate mask is compared with the previous epoch's. Recording starts
    once a distance exceeds ``eps``; after ``warmup`` epochs and once recording, distances
    enter a FIFO queue of length ``queue_length`` filled with ones; training stops when
    the queue's maximum falls below ``eps``.
    """

    def __init__(self, eps: float, queue_length: int, warmup: int,
                 queue: Optional[torch.Tensor] = None, last_mask: Optional[Mask] = None,
                 start_record: bool = False):
        self.eps = eps
        self.warmup = warmup
        self.queue = torch.ones(queue_length) if queue is None else queue.clone().float()
        self.last_mask = last_mask
        self.start_record = start_record

    def update(self, epoch: int, mask: Mask, remaining: float) -> Tuple[Optional[float], bool]:
        """Feeds the candidate mask after ``epoch``; returns (distance or None, stop)."""
        if epoch == 0 or self.last_mask is None:
            self.last_mask = mask
            return None, False
        distance = mask_distance(self.last_mask, mask, remaining)
        self.start_record = self.start_record or distance > self.eps
        if epoch > self.warmup and self.start_record:
            self.queue = torch.cat([torch.tensor([distance], dtype=self.queue.dtype), self.queue[:-1]])
        stop = bool(self.queue.max() < self.eps)
        if not stop:
            self.last_mask = mask
        return distance, stop
