"""Unstructured magnitude pruning, rewinding, and Early-Bird.

Masks use ``torch.nn.utils.prune``'s reparametrisation: a pruned layer holds
``weight_orig`` and ``weight_mask`` and a model's mask is the dict of its
``<module>.weight_mask`` entries. The published scope, the default, prunes the weights of
every ``nn.Conv2d`` together (global L1); a :class:`PruneScope` may add the ``nn.Linear``
layers, leave named layers dense, or prune each layer by the rate on its own (layer-wise).
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.utils import prune

from utils import UserError

Mask = Dict[str, torch.Tensor]
MASK_SUFFIX = ".weight_mask"
SCOPES = ("conv", "conv_linear")   # which kinds of layer are pruned (conv: the published scope)
MODES = ("global", "layerwise")    # one magnitude ranking across layers, or one per layer
_KINDS = {"conv": (nn.Conv2d,), "conv_linear": (nn.Conv2d, nn.Linear)}


@dataclass(frozen=True)
class PruneScope:
    """Which weights pruning removes, and how they are ranked.

    ``layers``: ``conv`` (the published scope) or ``conv_linear``; ``dense``: module names
    (as in ``named_modules``, e.g. ``conv1``, ``fc``) left unpruned; ``mode``: ``global``
    removes ``rate`` of the remaining weights of all pruned layers together, smallest first;
    ``layerwise`` removes ``rate`` of each layer's own remaining weights. Every layer of the
    scope's kinds carries a mask (a dense one all ones), so a mask's keys tell its scope.
    """

    layers: str = "conv"
    dense: Tuple[str, ...] = ()
    mode: str = "global"

    def __post_init__(self) -> None:
        if self.layers not in SCOPES:
            raise UserError(f"unknown --prune_scope {self.layers!r}; choose one of {', '.join(SCOPES)}")
        if self.mode not in MODES:
            raise UserError(f"unknown --prune_mode {self.mode!r}; choose one of {', '.join(MODES)}")

    def describe(self) -> str:
        dense = f", dense: {','.join(self.dense)}" if self.dense else ""
        return f"{self.layers} weights, {self.mode}{dense}"


DEFAULT_SCOPE = PruneScope()
WEIGHT_LAYERS = PruneScope("conv_linear")  # every layer a mask may cover


def scope_layers(model: nn.Module, scope: PruneScope = DEFAULT_SCOPE) -> List[Tuple[str, nn.Module]]:
    """The layers that carry a mask under ``scope`` (its kinds, dense ones included), in module order;
    under the default scope, every ``nn.Conv2d``: the layers of the published scope."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _KINDS[scope.layers])]


def prunable_layers(model: nn.Module, scope: PruneScope = DEFAULT_SCOPE) -> List[Tuple[str, nn.Module]]:
    """The layers pruning removes weights from: the scope's layers less its dense ones."""
    return [(name, m) for name, m in scope_layers(model, scope) if name not in scope.dense]


def masked_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The layers whose weights count as this model's: every conv, and a linear layer once it
    carries a mask (a ``conv_linear`` run). Remaining-weight figures are over these."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) or (isinstance(m, nn.Linear) and hasattr(m, "weight_mask"))]


def check_scope(model: nn.Module, scope: PruneScope) -> None:
    """Refuses, in one line, dense names that are no layer of the scope, or a scope leaving nothing to prune."""
    names = [name for name, _ in scope_layers(model, scope)]
    unknown = [name for name in scope.dense if name not in names]
    if unknown:
        shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
        raise UserError(f"--prune_dense {unknown[0]} is not a {scope.layers} layer of this model; "
                        f"its layers are {shown}")
    if not prunable_layers(model, scope):
        raise UserError(f"--prune_dense leaves no {scope.layers} layer to prune")


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


def _prune_together(layers: Sequence[Tuple[str, nn.Module]], rate: float, score: ImportanceScore) -> Mask:
    """The mask that removes ``rate`` of the still-unpruned weights of ``layers`` taken
    together, lowest score first.

    Mirrors ``prune.global_unstructured``: scores are concatenated in module order, the
    count is ``round(rate * unpruned)`` and the lowest are found with ``topk`` among the
    unpruned entries only. Nothing in the model is changed.
    """
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
    pieces = new_mask.split([module.weight.numel() for _, module in layers])
    return {name + MASK_SUFFIX: piece.view_as(module.weight).clone() for (name, module), piece in zip(layers, pieces)}


def _scoped_mask(model: nn.Module, rate: float, score: ImportanceScore, scope: PruneScope) -> Mask:
    """The mask that pruning ``rate`` more under ``scope`` gives (model untouched): every
    layer of the scope, its dense layers keeping their current mask."""
    pruned = prunable_layers(model, scope)
    if not pruned:
        raise UserError(f"the model has no {scope.layers} layers to prune")
    # global: one ranking across the pruned layers; layerwise: one ranking per layer
    groups = [pruned] if scope.mode == "global" else [[layer] for layer in pruned]
    result = {key: layer_mask for group in groups for key, layer_mask in _prune_together(group, rate, score).items()}
    for name, module in scope_layers(model, scope):
        if name in scope.dense:  # a dense layer keeps the mask it has
            result[name + MASK_SUFFIX] = _current_mask(module).to(module.weight.dtype).clone()
    return {name + MASK_SUFFIX: result[name + MASK_SUFFIX] for name, _ in scope_layers(model, scope)}


def candidate_mask(model: nn.Module, rate: float, scope: PruneScope = DEFAULT_SCOPE) -> Mask:
    """The mask that pruning ``rate`` more by magnitude would give now (model untouched)."""
    return _scoped_mask(model, rate, magnitude_score, scope)


def magnitude_prune(model: nn.Module, rate: float, scope: PruneScope = DEFAULT_SCOPE) -> None:
    """Prunes ``rate`` of the still-unpruned weights of ``scope``, smallest |w| first."""
    apply_mask(model, candidate_mask(model, rate, scope))


def global_magnitude_prune(model: nn.Module, rate: float) -> None:
    """Prunes ``rate`` of the still-unpruned conv weights, smallest |w| across all layers
    (the published rule, :data:`DEFAULT_SCOPE`)."""
    magnitude_prune(model, rate, DEFAULT_SCOPE)


def random_prune(model: nn.Module, rate: float, generator: Optional[torch.Generator] = None,
                 scope: PruneScope = DEFAULT_SCOPE) -> None:
    """Prunes the same count as :func:`magnitude_prune` in the same scope, chosen at random."""
    apply_mask(model, _scoped_mask(model, rate, RandomScore(generator), scope))


def random_mask_like(mask: Mapping[str, torch.Tensor], generator: torch.Generator) -> Mask:
    """A random mask with the same number of ones in every layer as ``mask`` (open_lth's
    randomly_prune control): per layer, that many positions drawn uniformly without
    replacement from ``generator`` (a CPU generator), layers in the mask's key order."""
    result: Mask = {}
    for key, layer in mask.items():
        kept = int(layer.sum())
        order = torch.randperm(layer.numel(), generator=generator)
        new = torch.zeros(layer.numel(), dtype=layer.dtype)
        new[order[:kept]] = 1
        result[key] = new.view_as(layer).to(layer.device)
    return result


def extract_mask(state_dict: Mapping[str, torch.Tensor]) -> Mask:
    """The ``*.weight_mask`` entries of a (pruned) state_dict."""
    return {k: v.detach().clone() for k, v in state_dict.items() if k.endswith(MASK_SUFFIX)}


def check_mask(model: nn.Module, mask: Mapping[str, torch.Tensor], source: str = "the mask") -> None:
    """Raises a one-line UserError unless ``mask`` is binary and fits this model: one entry
    per conv layer (the published scope), plus one per linear layer when it has any."""
    layers = scope_layers(model, WEIGHT_LAYERS)
    expected = {name + MASK_SUFFIX: m.weight.shape for name, m in layers if isinstance(m, nn.Conv2d)}
    linear = {name + MASK_SUFFIX: m.weight.shape for name, m in layers if isinstance(m, nn.Linear)}
    if any(key in linear for key in mask):
        expected.update(linear)
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
        if not bool(((mask[key] == 0) | (mask[key] == 1)).all()):
            raise UserError(f"{source} is not binary: {key} holds values other than 0 and 1")


def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Applies a checked mask with ``prune.custom_from_mask`` (multiplies with any present)."""
    check_mask(model, mask)
    for name, module in scope_layers(model, WEIGHT_LAYERS):
        if name + MASK_SUFFIX not in mask:
            continue
        layer_mask = mask[name + MASK_SUFFIX].to(device=module.weight.device, dtype=module.weight.dtype)
        prune.custom_from_mask(module, "weight", layer_mask)


def remove_masks(model: nn.Module) -> None:
    """Folds masks into the weights and drops the reparametrisation."""
    for _, module in scope_layers(model, WEIGHT_LAYERS):
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
    return {(key[: -len("_orig")] if key.endswith(".weight_orig") else key): value
            for key, value in state_dict.items() if not key.endswith(MASK_SUFFIX)}


def remaining_weights(model: nn.Module) -> float:
    """Percentage of conv weights (and of masked linear weights) that are non-zero."""
    weights = [_effective_weight(module) for _, module in masked_layers(model)]
    return 100.0 * sum(int(torch.count_nonzero(w)) for w in weights) / sum(w.numel() for w in weights)


def mask_size(mask: Mapping[str, torch.Tensor]) -> int:
    """Number of ones (unpruned weights) in a mask."""
    return int(sum(int(m.sum()) for m in mask.values()))


def conv_weight_count(model: nn.Module) -> int:
    return sum(m.weight.numel() for _, m in scope_layers(model))


def unpruned_count(model: nn.Module, scope: Optional[PruneScope] = None) -> int:
    """Weights not removed by a mask (all of them before the first pruning), over the conv
    layers and the masked linear ones, or over the layers of ``scope`` when given (what an
    Early-Bird distance under that scope is relative to)."""
    layers = masked_layers(model) if scope is None else scope_layers(model, scope)
    return sum(int(_current_mask(m).sum()) for _, m in layers)


def layer_counts(model: nn.Module) -> List[Tuple[str, int, int]]:
    """(layer, weights, remaining) for every conv and linear layer, in module order;
    remaining counts the weights its mask keeps (all of them when it has none)."""
    return [(name, m.weight.numel(), int(_current_mask(m).sum()))
            for name, m in scope_layers(model, WEIGHT_LAYERS)]


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
