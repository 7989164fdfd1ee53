"""Percentiles, as every benchmark computes and prints them."""

from __future__ import annotations


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`: the value at rank floor(q * n) of the sorted values; NaN if none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}"


def p50_p99(values: list[float]) -> str:
    """`p50 / p99` in milliseconds, or `-` when there are no values."""
    return f"{ms(pct(values, 0.5))} / {ms(pct(values, 0.99))}" if values else "-"
