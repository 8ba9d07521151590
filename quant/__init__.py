"""Quantization recipes (fp32 today; int8/int4 recipes arrive with the quantization work)."""
