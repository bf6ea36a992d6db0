"""triton_softmax.integrations.hf on tiny randomly initialised transformers models (no download).

The oracle is the model's own forward: the patched exact path must give its loss and the
gradients of every parameter within float32 tolerance, for Llama (tied and untied embeddings),
Qwen2, Mistral, Gemma, Gemma 2 (soft-capped logits), Granite and Cohere (scaled logits); with
num_items_in_batch (gradient accumulation), shift_labels, a custom ignore_index; and the same
for a sequence classifier.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from triton_softmax.integrations import hf  # noqa: E402

VOCAB = 300
TINY = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    pad_token_id=0,
)


def _causal_lm(family: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    kw = dict(TINY, **overrides)
    if family == "llama":
        kw.setdefault("tie_word_embeddings", False)
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw))
    elif family == "llama_tied":
        model = transformers.LlamaForCausalLM(
            transformers.LlamaConfig(**kw, tie_word_embeddings=True)
        )
    elif family == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw))
    elif family == "mistral":
        model = transformers.MistralForCausalLM(transformers.MistralConfig(**kw))
    elif family == "gemma":
        model = transformers.GemmaForCausalLM(transformers.GemmaConfig(**kw, head_dim=8))
    elif family == "gemma2":
        cfg = transformers.Gemma2Config(**kw, head_dim=8, final_logit_softcapping=2.0)
        model = transformers.Gemma2ForCausalLM(cfg)
    elif family == "granite":  # logits divided by logits_scaling
        cfg = transformers.GraniteConfig(**kw, logits_scaling=4.0)
        model = transformers.GraniteForCausalLM(cfg)
    elif family == "cohere":  # logits multiplied by logit_scale
        cfg = transformers.CohereConfig(**kw, logit_scale=0.5)
        model = transformers.CohereForCausalLM(cfg)
    else:
        raise AssertionError(family)
    return model.float().train()


def _batch(B=2, T=12, seed=1, vocab=VOCAB):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (B, T), generator=g)
    labels = ids.clone()
    labels[0, :3] = -100  # a prompt that is not trained on
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0  # right padding
    labels[1, -2:] = -100
    return ids, mask, labels


def _loss_and_grads(model, **inputs):
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads, out


def _assert_same(ref, got):
    loss_r, grads_r, _ = ref
    loss_g, grads_g, _ = got
    torch.testing.assert_close(loss_g, loss_r, rtol=1e-5, atol=1e-6)
    assert grads_r.keys() == grads_g.keys()
    for name in grads_r:
        torch.testing.assert_close(grads_g[name], grads_r[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "family", ["llama", "llama_tied", "qwen2", "mistral", "gemma", "gemma2", "granite", "cohere"]
)
def test_exact_path_equals_model_loss_and_grads(family):
    model = _causal_lm(family)
    ids, mask, labels = _batch()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    ref = _loss_and_grads(model, **inputs)
    hf.patch(model)
    assert hf.is_patched(model)
    got = _loss_and_grads(model, **inputs)
    _assert_same(ref, got)
    assert got[2].logits is None  # training with labels: no logits tensor


def test_tied_embeddings_get_one_gradient():
    model = _causal_lm("llama_tied")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids, mask, labels = _batch()
    ref = _loss_and_grads(model, input_ids=ids, labels=labels)
    hf.patch(model)
    got = _loss_and_grads(model, input_ids=ids, labels=labels)
    _assert_same(ref, got)
    # the shared matrix gets the lm_head part AND the embedding part of the gradient
    assert "model.embed_tokens.weight" in got[1]


def test_num_items_in_batch_is_gradient_accumulation():
    """Two micro-batches with loss = sum / num_items_in_batch add up to the gradient of the
    mean over both, as transformers' own loss does."""
    model = _causal_lm("llama")
    ids, mask, labels = _batch(B=4, T=10, seed=3)
    labels[2, 1:7] = -100  # unequal token counts per micro-batch
    total = (labels[:, 1:] != -100).sum()

    def accumulate():
        model.zero_grad(set_to_none=True)
        losses = []
        for rows in (slice(0, 2), slice(2, 4)):
            out = model(input_ids=ids[rows], labels=labels[rows], num_items_in_batch=total)
            out.loss.backward()
            losses.append(out.loss.detach())
        return sum(losses), {n: p.grad.clone() for n, p in model.named_parameters()}

    ref_loss, ref_grads = accumulate()
    hf.patch(model)
    got_loss, got_grads = accumulate()
    torch.testing.assert_close(got_loss, ref_loss, rtol=1e-5, atol=1e-6)
    for n in ref_grads:
        torch.testing.assert_close(got_grads[n], ref_grads[n], rtol=1e-4, atol=1e-6)
    # ... and equal the mean over the whole batch
    whole = _loss_and_grads(model, input_ids=ids, labels=labels)
    torch.testing.assert_close(got_loss, whole[0], rtol=1e-5, atol=1e-6)
    for n in ref_grads:
        torch.testing.assert_close(got_grads[n], whole[1][n], rtol=1e-4, atol=1e-6)


def test_shift_labels_and_custom_ignore_index():
    model = _causal_lm("qwen2")
    ids, mask, labels = _batch()
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:].contiguous()
    ref = _loss_and_grads(model, input_ids=ids, shift_labels=shifted, labels=labels)
    hf.patch(model)
    got = _loss_and_grads(model, input_ids=ids, shift_labels=shifted, labels=labels)
    _assert_same(ref, got)
    other = torch.where(labels == -100, torch.full_like(labels, -1), labels)
    got_other = _loss_and_grads(model, input_ids=ids, labels=other, ignore_index=-1)
    _assert_same(ref, got_other)


def test_logits_when_asked_and_in_eval():
    model = _causal_lm("gemma2")
    ids, mask, labels = _batch()
    with torch.no_grad():
        ref = model(input_ids=ids, labels=labels)
    hf.patch(model)
    with torch.no_grad():
        asked = model(input_ids=ids, labels=labels, return_logits=True)
        model.eval()
        in_eval = model(input_ids=ids, labels=labels)
        no_labels = model(input_ids=ids)
    for out in (asked, in_eval, no_labels):
        torch.testing.assert_close(out.logits, ref.logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(in_eval.loss, ref.loss, rtol=1e-5, atol=1e-6)
    assert no_labels.loss is None
    model.train()
    assert model(input_ids=ids, labels=labels, return_logits=False).logits is None
    hf.patch(model, return_logits=True)
    assert model(input_ids=ids, labels=labels).logits is not None
    tup = model(input_ids=ids, labels=labels, return_dict=False)
    torch.testing.assert_close(tup[0], ref.loss, rtol=1e-5, atol=1e-6)


def test_generate_unchanged():
    model = _causal_lm("llama").eval()
    ids = torch.randint(1, VOCAB, (1, 5), generator=torch.Generator().manual_seed(0))
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    ref = model.generate(ids, **kw)
    hf.patch(model, method="lsh", num_candidates=32, num_uniform=32)
    torch.testing.assert_close(model.generate(ids, **kw), ref)


def test_unpatch_restores_the_model():
    model = _causal_lm("llama_tied")
    keys = list(model.state_dict())
    forward = model.forward
    ids, mask, labels = _batch()
    ref = _loss_and_grads(model, input_ids=ids, labels=labels)
    hf.patch(model, method="lsh", num_candidates=32, num_uniform=32)
    assert model.forward.triton_softmax_impl is hf._causal_lm_forward
    assert list(model.state_dict()) == keys  # nothing added to the checkpoint
    assert len(list(model.parameters())) == len(list(ref[1]))
    model(input_ids=ids, labels=labels).loss.backward()
    hf.unpatch(model)
    assert not hf.is_patched(model)
    assert "forward" not in model.__dict__ and model.forward == forward
    got = _loss_and_grads(model, input_ids=ids, labels=labels)
    _assert_same(ref, got)
    assert got[2].logits is not None
    hf.unpatch(model)  # idempotent


def test_patch_keeps_an_existing_instance_forward():
    model = _causal_lm("llama")
    calls = []
    own = model.forward

    def wrapper(*a, **k):
        calls.append(1)
        return own(*a, **k)

    model.forward = wrapper
    hf.patch(model)
    ids, mask, labels = _batch()
    model(input_ids=ids)  # no labels: the previous forward runs
    assert calls == [1]
    hf.unpatch(model)
    assert model.forward is wrapper


def test_bad_arguments_raise():
    model = _causal_lm("llama")
    with pytest.raises(ValueError, match="method"):
        hf.patch(model, method="nope")
    with pytest.raises(ValueError, match="num_candidates"):
        hf.patch(model, method="lsh", num_candidates=0)
    with pytest.raises(ValueError, match="reduction"):
        hf.patch(model, reduction="sum")
    with pytest.raises(ValueError, match="ignore_index"):
        hf.patch(model, method="lsh", ignore_index=-1)
    with pytest.raises(ValueError, match="model"):
        hf.patch(torch.nn.Linear(3, 4))
    assert not hf.is_patched(model)


def _train(model, steps, ids, labels, lr=3e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _exact_loss(model, ids, labels):
    model.eval()
    with torch.no_grad():
        loss = float(model(input_ids=ids, labels=labels).loss)
    model.train()
    return loss


@pytest.mark.parametrize("method", ["lsh", "faiss"])
def test_sampled_path_trains(method):
    if method == "faiss":
        pytest.importorskip("faiss")
    vocab = 2000
    model = _causal_lm("llama_tied", vocab_size=vocab)
    ids, _, labels = _batch(B=4, T=16, seed=5, vocab=vocab)
    hf.patch(
        model,
        method=method,
        num_candidates=64,
        num_uniform=64,
        refresh_every=5,
        search_min_mass=None,
    )
    before = _exact_loss(model, ids, labels)  # eval mode: the exact loss (exact_eval=True)
    losses = _train(model, 12, ids, labels, lr=1e-2)
    after = _exact_loss(model, ids, labels)
    assert losses[-1] < losses[0] - 1.0, losses
    assert after < before - 0.5, (before, after)
    state = model.__dict__[hf._ATTR]
    assert state.loss_module.weight is model.lm_head.weight  # tied, not copied
    assert state.loss_module.refresh_count >= 2  # refresh_every=5 over 12 steps


def test_sampled_eval_loss_is_exact():
    model = _causal_lm("llama")
    ids, _, labels = _batch()
    with torch.no_grad():
        ref = model.eval()(input_ids=ids, labels=labels).loss
    hf.patch(model, method="lsh", num_candidates=16, num_uniform=16)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, labels=labels).loss, ref)


def test_positional_arguments_follow_the_model_signature():
    model = _causal_lm("llama")
    ids, mask, labels = _batch()
    ref = _loss_and_grads(model, input_ids=ids, attention_mask=mask, labels=labels)
    hf.patch(model)
    params = list(__import__("inspect").signature(model.forward).parameters)
    assert params[:2] == ["input_ids", "attention_mask"] and "labels" in params
    out = model(ids, mask, labels=labels)
    torch.testing.assert_close(out.loss, ref[0], rtol=1e-5, atol=1e-6)


def test_trainer_runs_with_gradient_accumulation(tmp_path, monkeypatch):
    from torch.utils.data import Dataset

    class Tokens(Dataset):
        def __init__(self, n=16, T=12):
            g = torch.Generator().manual_seed(0)
            self.ids = torch.randint(1, VOCAB, (n, T), generator=g)

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            return dict(input_ids=self.ids[i], labels=self.ids[i].clone())

    model = _causal_lm("llama_tied")
    seen = []
    head_loss = hf._head_loss

    def spy(model, state, hidden, target, num_items_in_batch, ignore_index):
        seen.append(num_items_in_batch)
        return head_loss(model, state, hidden, target, num_items_in_batch, ignore_index)

    monkeypatch.setattr(hf, "_head_loss", spy)
    hf.patch(model, method="lsh", num_candidates=32, num_uniform=32, refresh_every=2)
    before = model.lm_head.weight.detach().clone()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens())
    assert trainer.model_accepts_loss_kwargs
    result = trainer.train()
    assert result.global_step == 2
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert len(seen) == 4 and all(torch.is_tensor(s) for s in seen)
    assert int(seen[0]) == 2 * 4 * 11  # two micro-batches of 4 rows, 11 shifted targets each
    assert not torch.equal(model.lm_head.weight.detach(), before)


# ---- sequence classification over a large label space ----------------------------------------
def _classifier(num_labels=5000, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(**dict(TINY, num_labels=num_labels, **overrides))
    return transformers.LlamaForSequenceClassification(cfg).float().train()


def _cls_batch(num_labels=5000, B=6, T=9, seed=2):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (B, T), generator=g)
    ids[1, -3:] = 0  # right padding
    ids[2, :2] = 0  # left padding
    labels = torch.randint(0, num_labels, (B,), generator=g)
    labels[3] = -100
    return ids, labels


def test_sequence_classification_exact_equals_model():
    model = _classifier()
    ids, labels = _cls_batch()
    ref = _loss_and_grads(model, input_ids=ids, labels=labels)
    hf.patch(model)  # detects the score head
    assert model.forward.triton_softmax_impl is hf._sequence_classification_forward
    got = _loss_and_grads(model, input_ids=ids, labels=labels)
    _assert_same(ref, got)
    assert got[2].logits is None
    with torch.no_grad():
        logits = model(input_ids=ids, labels=labels, return_logits=True).logits
    torch.testing.assert_close(logits, ref[2].logits.detach(), rtol=1e-5, atol=1e-6)
    hf.unpatch(model)
    _assert_same(ref, _loss_and_grads(model, input_ids=ids, labels=labels))


def test_sequence_classification_regression_falls_back():
    model = _classifier(num_labels=1)
    ids, _ = _cls_batch(num_labels=1)
    target = torch.randn(ids.shape[0])
    ref = _loss_and_grads(model, input_ids=ids, labels=target)
    hf.patch_sequence_classification(model)
    _assert_same(ref, _loss_and_grads(model, input_ids=ids, labels=target))


def test_sequence_classification_sampled_trains():
    model = _classifier(num_labels=20_000)
    ids, labels = _cls_batch(num_labels=20_000, B=16)
    hf.patch_sequence_classification(model, method="lsh", num_candidates=64, num_uniform=64)
    before = _exact_loss(model, ids, labels)
    _train(model, 10, ids, labels, lr=1e-2)
    after = _exact_loss(model, ids, labels)
    assert after < before - 1.0, (before, after)


@pytest.mark.parametrize("family", ["llama_tied", "llama"])
def test_sampled_head_follows_resize_token_embeddings(family):
    """resize_token_embeddings on a tied model keeps the head's Parameter and swaps its data
    (transformers 5): the patched head's loss module follows the new size, and the loss is
    the estimator over the new vocabulary (every class reachable: |S| + |T| >= n, exact)."""
    model = _causal_lm(family)
    ids, _, labels = _batch()
    hf.patch(model, method="lsh", num_candidates=16, num_uniform=16)
    model(input_ids=ids, labels=labels).loss.backward()  # a module for 300 classes
    model.zero_grad(set_to_none=True)
    model.resize_token_embeddings(1300)
    assert model.lm_head.weight.shape[0] == 1300
    labels = labels.clone()
    labels[0, -1] = 1299  # a new class
    out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    state = model.__dict__[hf._ATTR]
    assert state.loss_module.weight is model.lm_head.weight
    assert state.loss_module.num_classes == 1300 and torch.isfinite(out.loss)
    assert state.loss_module.steps == 2  # the schedule goes on from the old module's step
