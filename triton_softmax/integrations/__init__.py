"""Integrations with training frameworks (optional dependencies, imported on demand).

hf   Hugging Face transformers: patch a *ForCausalLM or *ForSequenceClassification so its
     loss comes from the hidden states and the head's weight, never from a logits tensor
     (`pip install triton_softmax[hf]`).
"""
