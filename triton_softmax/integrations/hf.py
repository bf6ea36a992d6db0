"""Hugging Face transformers: one call puts this library's loss into a model.

    from triton_softmax.integrations.hf import patch, unpatch

    model = AutoModelForCausalLM.from_pretrained(...)   # or from_config(...)
    patch(model)                                        # exact loss, no (B, T, V) logits
    patch(model, method="lsh", num_candidates=512, num_uniform=512, refresh_every=100)
    unpatch(model)                                      # the model's own forward again

`patch` replaces the instance's `forward` (the class is untouched, so other instances are not
affected). With labels, the patched forward runs the backbone (`model.<base_model_prefix>`),
and computes the loss from its last hidden states and the head's weight (`lm_head.weight`, or
`score.weight` for sequence classification) with

  method="full"              the exact chunked / fused linear cross-entropy
                             (`sampled_softmax_cross_entropy(method="full")`): no logits tensor;
  method="faiss"|"lsh"|"auto" a `SampledSoftmaxLoss` tied to the head's weight Parameter (|S| =
                             num_candidates, |T| = num_uniform, index rebuilt every
                             refresh_every training forwards); in eval mode the exact loss is
                             computed unless exact_eval=False.

Hugging Face semantics kept: labels are shifted inside (position t predicts label t+1; or pass
`shift_labels`), rows labelled `ignore_index` (-100) get no loss and no gradient, the loss is the
mean over non-ignored tokens, or `sum / num_items_in_batch` when the Trainer passes
`num_items_in_batch` (gradient accumulation); tied embeddings work (the head's weight is read at
every call, so a re-tied or resized head is picked up). Logits are returned when asked for
(`return_logits=True`, at patch time or per call), and by default whenever the model is in eval
mode; in training mode with labels they are None. Without labels the model's own forward runs
(generation is unchanged).

Supported: models whose *ForCausalLM forward is the Llama template (backbone -> last hidden
state -> lm_head -> loss): Llama, Mistral, Qwen2/Qwen3, Gemma/Gemma2/Gemma3 text (their
final_logit_softcapping is applied as the loss's `softcap`), Cohere (logit_scale) and Granite
(logits_scaling), Phi-3 and others of the same shape; and *ForSequenceClassification heads built
on transformers' GenericForSequenceClassification (single-label classification; regression and
multi-label problems fall back to the model's own forward).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..functional import sampled_softmax_cross_entropy
from ..loss import SampledSoftmaxLoss

__all__ = ["is_patched", "patch", "patch_causal_lm", "patch_sequence_classification", "unpatch"]

_ATTR = "_triton_softmax_patch"
METHODS = ("full", "faiss", "lsh", "auto")
# options of the exact path that the functional form takes (the rest belong to the sampled module)
_FULL_OPTIONS = ("label_smoothing", "z_loss", "deterministic", "validate")


@dataclasses.dataclass
class _Patch:
    """What a patched model keeps (a plain object: nothing is added to its state_dict)."""

    kind: str  # "causal_lm" | "sequence_classification"
    head: str  # attribute name of the output layer: "lm_head" | "score"
    method: str
    return_logits: bool | None
    exact_eval: bool
    module_options: dict
    full_options: dict
    saved_forward: Any  # an instance-level forward that was there before (e.g. a wrapper)
    loss_module: SampledSoftmaxLoss | None = None

    def sampled_module(self, weight: nn.Parameter, bias: nn.Parameter | None) -> SampledSoftmaxLoss:
        """The SampledSoftmaxLoss tied to the head's current weight: made anew when the head
        has another Parameter or the same one resized (resize_token_embeddings on a tied
        model swaps the data of the Parameter it keeps), its index then built over the new
        rows; the step count (the refresh schedule and the draws) goes on."""
        m = self.loss_module
        if m is None or m.weight is not weight or tuple(weight.shape) != (m.num_classes, m.dim):
            old = m
            m = SampledSoftmaxLoss(
                weight=weight, method=self.method, reduction="none", **self.module_options
            )
            if old is not None:
                m.steps = old.steps
            self.loss_module = m
        if m.bias is not bias:
            m.bias = bias  # the head's own bias Parameter (or None): gradients flow to it
        return m


def is_patched(model: nn.Module) -> bool:
    """True when `model.forward` is this library's patched forward."""
    return isinstance(getattr(model, _ATTR, None), _Patch)


def patch(model: nn.Module, **options) -> nn.Module:
    """Patch a causal LM (it has `lm_head`) or a sequence classifier (it has `score`); see
    patch_causal_lm for the options. Returns the same model."""
    if hasattr(model, "lm_head"):
        return patch_causal_lm(model, **options)
    if hasattr(model, "score"):
        return patch_sequence_classification(model, **options)
    raise ValueError(
        f"model: {type(model).__name__} has neither lm_head (causal LM) nor score "
        "(sequence classification)"
    )


def patch_causal_lm(
    model: nn.Module,
    *,
    method: str = "full",
    num_candidates: int = 512,
    num_uniform: int = 512,
    refresh_every: int = 100,
    return_logits: bool | None = None,
    exact_eval: bool = True,
    **loss_options,
) -> nn.Module:
    """Make a *ForCausalLM compute its loss without materialising the (B, T, V) logits.

    method: "full" (exact, default) | "faiss" | "lsh" | "auto" (the dispatcher's choice);
    num_candidates |S| (with the target), num_uniform |T|, refresh_every: index rebuilds, in
    training forwards (micro-batches). return_logits: None = only in eval mode; True / False
    always / never (a call's `return_logits=` wins). exact_eval: in eval mode the sampled
    methods compute the exact loss. loss_options go to SampledSoftmaxLoss (e.g. lsh_tables,
    faiss_index, seed, sampler, candidate_scheme, z_loss); label_smoothing, z_loss,
    deterministic and validate also apply to the exact path. Returns the same model.
    """
    _install(
        model,
        "causal_lm",
        "lm_head",
        _causal_lm_forward,
        method,
        num_candidates,
        num_uniform,
        refresh_every,
        return_logits,
        exact_eval,
        loss_options,
    )
    return model


def patch_sequence_classification(
    model: nn.Module,
    *,
    method: str = "full",
    num_candidates: int = 512,
    num_uniform: int = 512,
    refresh_every: int = 100,
    return_logits: bool | None = None,
    exact_eval: bool = True,
    **loss_options,
) -> nn.Module:
    """The same for a *ForSequenceClassification head over a huge label space: the loss of the
    pooled hidden state (the last non-padding token, as transformers pools) against
    `score.weight` (and `score.bias` if any), without the (B, num_labels) logits in training.
    Options as patch_causal_lm. Returns the same model."""
    _install(
        model,
        "sequence_classification",
        "score",
        _sequence_classification_forward,
        method,
        num_candidates,
        num_uniform,
        refresh_every,
        return_logits,
        exact_eval,
        loss_options,
    )
    return model


def unpatch(model: nn.Module) -> nn.Module:
    """Restore the model's own forward (a no-op on a model that is not patched)."""
    state = getattr(model, _ATTR, None)
    if not isinstance(state, _Patch):
        return model
    if state.saved_forward is not None:
        model.forward = state.saved_forward
    elif "forward" in model.__dict__:
        del model.forward
    del model.__dict__[_ATTR]
    return model


# ---- installation -------------------------------------------------------------------------
def _install(
    model,
    kind,
    head_name,
    forward,
    method,
    num_candidates,
    num_uniform,
    refresh_every,
    return_logits,
    exact_eval,
    loss_options,
) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    head = getattr(model, head_name, None)
    weight = getattr(head, "weight", None)
    if not isinstance(weight, nn.Parameter) or weight.dim() != 2:
        raise ValueError(
            f"model: {type(model).__name__}.{head_name} must be a linear layer with a 2-D "
            "weight Parameter"
        )
    _backbone(model)  # raises if there is none
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if return_logits not in (None, True, False):
        raise ValueError(f"return_logits must be None, True or False, got {return_logits!r}")
    for name in ("weight", "method", "reduction", "bias", "num_classes", "dim", "ignore_index"):
        if name in loss_options:
            raise ValueError(f"{name} is set by the patch, not a loss option")
    module_options = dict(
        num_candidates=num_candidates,
        num_uniform=num_uniform,
        refresh_every=refresh_every,
        ignore_index=-100,
        **loss_options,
    )
    full_options = {k: loss_options[k] for k in _FULL_OPTIONS if k in loss_options}
    unpatch(model)
    state = _Patch(
        kind=kind,
        head=head_name,
        method=method,
        return_logits=return_logits,
        exact_eval=bool(exact_eval),
        module_options=module_options,
        full_options=full_options,
        saved_forward=model.__dict__.get("forward"),
    )
    if method != "full":  # build the module now: bad options fail here, not at step 1
        state.sampled_module(weight, head.bias)
    model.__dict__[_ATTR] = state
    model.forward = _bind(model, forward)


def _bind(model: nn.Module, impl):
    """model.forward for this instance: `impl(model, **arguments)`, exposing the class
    forward's signature, because transformers.Trainer reads it (which input columns to keep,
    whether the model takes num_items_in_batch) and callers may pass arguments by position."""
    signature = inspect.signature(type(model).forward.__get__(model))

    def forward(*args, **kwargs):
        if args:
            kwargs = {**signature.bind_partial(*args).arguments, **kwargs}
        return impl(model, **kwargs)

    forward.__signature__ = signature
    forward.__doc__ = impl.__doc__
    forward.triton_softmax_impl = impl
    return forward


def _backbone(model: nn.Module) -> nn.Module:
    prefix = getattr(model, "base_model_prefix", "model")
    backbone = getattr(model, prefix, None)
    if not isinstance(backbone, nn.Module) or backbone is model:
        raise ValueError(
            f"model: {type(model).__name__} has no backbone at .{prefix} (base_model_prefix)"
        )
    return backbone


def _original_forward(model: nn.Module, state: _Patch):
    if state.saved_forward is not None:
        return state.saved_forward
    return type(model).forward.__get__(model)


# ---- the loss ------------------------------------------------------------------------------
def _logit_transform(model: nn.Module) -> tuple[float, float]:
    """(scale, softcap) the model applies to lm_head's output before its loss: Cohere multiplies
    by logit_scale, Granite divides by logits_scaling, Gemma 2/3 soft-cap. Sequence
    classifiers apply neither."""
    if model.__dict__[_ATTR].kind != "causal_lm":
        return 1.0, 0.0
    config = getattr(model, "config", None)
    scale = float(getattr(model, "logit_scale", 1.0) or 1.0)
    divisor = getattr(config, "logits_scaling", None)
    if divisor:
        scale /= float(divisor)
    softcap = getattr(config, "final_logit_softcapping", None)
    return scale, float(softcap or 0.0)


def _logits(head: nn.Module, hidden: torch.Tensor, scale: float, softcap: float) -> torch.Tensor:
    logits = head(hidden)
    if scale != 1.0:
        logits = logits * scale
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def _head_loss(
    model: nn.Module,
    state: _Patch,
    hidden: torch.Tensor,
    target: torch.Tensor,
    num_items_in_batch,
    ignore_index: int,
) -> torch.Tensor:
    """hidden (N, d), target (N,) int64 -> the HF-reduced loss (0-d float32)."""
    head = getattr(model, state.head)
    weight, bias = head.weight, head.bias
    scale, softcap = _logit_transform(model)
    if scale != 1.0:  # (s h) W^T = s (h W^T): scaling the input scales the logits
        if bias is not None:
            raise ValueError(f"model: {state.head} has a bias and scaled logits (unsupported)")
        hidden = hidden * scale
    target = target.to(hidden.device).long()
    if ignore_index != -100:  # the library's ignore_index is fixed at -100 here
        target = torch.where(target == ignore_index, torch.full_like(target, -100), target)
    reduction = "mean" if num_items_in_batch is None else "sum"
    training = model.training and torch.is_grad_enabled()
    if state.method == "full" or (state.exact_eval and not training):
        loss = sampled_softmax_cross_entropy(
            hidden,
            weight,
            target,
            bias,
            method="full",
            reduction=reduction,
            ignore_index=-100,
            softcap=softcap,
            **state.full_options,
        )
    else:
        module = state.sampled_module(weight, bias)
        module.softcap = softcap
        module.train(model.training)
        rows = module(hidden, target)  # (N,), ignored rows are 0
        loss = rows.sum()
        if reduction == "mean":
            loss = loss / (target != -100).sum()
    if num_items_in_batch is not None:
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss = loss / num_items_in_batch
    return loss


def _want_logits(model: nn.Module, state: _Patch, per_call: bool | None) -> bool:
    if per_call is not None:
        return bool(per_call)
    if state.return_logits is not None:
        return state.return_logits
    return not model.training


def _keep_positions(hidden: torch.Tensor, logits_to_keep) -> torch.Tensor:
    """transformers' logits_to_keep: an int keeps the last k positions (0: all), a tensor
    indexes positions."""
    if isinstance(logits_to_keep, int):
        return hidden if logits_to_keep == 0 else hidden[:, -logits_to_keep:, :]
    return hidden[:, logits_to_keep, :]


def _output(cls_name: str, backbone_out, **fields):
    """Build transformers' output dataclass, carrying over the backbone's cache / hidden states
    / attentions under whichever field names this transformers version uses."""
    from transformers import modeling_outputs

    cls = getattr(modeling_outputs, cls_name)
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(backbone_out, tuple):
        for name in ("cache", "past_key_values", "hidden_states", "attentions"):
            if name in names and name not in fields:
                fields[name] = getattr(backbone_out, name, None)
    return cls(**{k: v for k, v in fields.items() if k in names})


def _run_backbone(model, input_ids, attention_mask, kwargs):
    return _backbone(model)(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def _causal_lm_forward(
    self: nn.Module, input_ids=None, attention_mask=None, labels=None, logits_to_keep=0, **kwargs
):
    """The patched *ForCausalLM.forward (see the module docstring)."""
    state: _Patch = self.__dict__[_ATTR]
    shift_labels = kwargs.pop("shift_labels", None)
    return_logits = kwargs.pop("return_logits", None)
    if labels is None and shift_labels is None:
        return _original_forward(self, state)(
            input_ids=input_ids,
            attention_mask=attention_mask,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
    num_items_in_batch = kwargs.pop("num_items_in_batch", None)
    ignore_index = kwargs.pop("ignore_index", -100)
    return_dict = kwargs.pop("return_dict", None)
    if return_dict is None:
        return_dict = getattr(self.config, "return_dict", True)
    out = _run_backbone(self, input_ids, attention_mask, kwargs)
    hidden = out[0]  # (B, T, d): the backbone's last hidden state (after its final norm)
    if shift_labels is None:  # position t predicts label t+1; the last position predicts nothing
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    loss = _head_loss(
        self,
        state,
        hidden.reshape(-1, hidden.shape[-1]),
        shift_labels.reshape(-1),
        num_items_in_batch,
        ignore_index,
    )
    logits = None
    if _want_logits(self, state, return_logits):
        logits = _logits(
            self.lm_head, _keep_positions(hidden, logits_to_keep), *_logit_transform(self)
        )
    result = _output("CausalLMOutputWithPast", out, loss=loss, logits=logits)
    return result.to_tuple() if return_dict is False else result


def _last_token(model, input_ids, hidden):
    """Index of the pooled position per row, as transformers' sequence classifiers pool: the
    rightmost token that is not padding (left or right padding), or the last one."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    pad = getattr(text_config, "pad_token_id", None)
    batch = hidden.shape[0]
    if pad is None:
        if batch != 1:
            raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined.")
        return torch.full((1,), hidden.shape[1] - 1, device=hidden.device, dtype=torch.long)
    if input_ids is None:
        return torch.full((batch,), hidden.shape[1] - 1, device=hidden.device, dtype=torch.long)
    non_pad = (input_ids != pad).to(hidden.device, torch.int32)
    positions = torch.arange(input_ids.shape[-1], device=hidden.device, dtype=torch.int32)
    return (positions * non_pad).argmax(-1)


def _single_label(model, labels) -> bool:
    problem = getattr(model.config, "problem_type", None)
    num_labels = getattr(model, "num_labels", getattr(model.config, "num_labels", 0))
    if problem not in (None, "single_label_classification") or num_labels <= 1:
        return False
    return labels.dtype in (torch.long, torch.int)


def _sequence_classification_forward(
    self: nn.Module, input_ids=None, attention_mask=None, labels=None, **kwargs
):
    """The patched *ForSequenceClassification.forward (see the module docstring)."""
    state: _Patch = self.__dict__[_ATTR]
    return_logits = kwargs.pop("return_logits", None)
    if labels is None or not _single_label(self, labels):
        kwargs.pop("num_items_in_batch", None)  # transformers' own loss ignores it
        return _original_forward(self, state)(
            input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs
        )
    num_items_in_batch = kwargs.pop("num_items_in_batch", None)
    ignore_index = kwargs.pop("ignore_index", -100)
    return_dict = kwargs.pop("return_dict", None)
    if return_dict is None:
        return_dict = getattr(self.config, "return_dict", True)
    out = _run_backbone(self, input_ids, attention_mask, kwargs)
    hidden = out[0]  # (B, T, d)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    pooled = hidden[rows, _last_token(self, input_ids, hidden)]  # (B, d)
    loss = _head_loss(self, state, pooled, labels.reshape(-1), num_items_in_batch, ignore_index)
    logits = None
    if _want_logits(self, state, return_logits):
        logits = _logits(self.score, pooled, *_logit_transform(self))
    result = _output("SequenceClassifierOutputWithPast", out, loss=loss, logits=logits)
    return result.to_tuple() if return_dict is False else result
