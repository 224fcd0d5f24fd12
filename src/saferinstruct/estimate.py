"""What a whole run will take, projected from a few sampled sources (`run --estimate N`),
and, after the real run, the projection beside what happened.

The sample runs through every stage like any run (its calls cached, so the real run pays
none of them twice); each stage's calls, tokens in and out (of every call it needed,
answered from the cache or not) and wall time are then scaled by sources / sampled.
Kept shares and pairs come from the sample's funnel. With prices in a role's config
(`price_in_per_mtok`, `price_out_per_mtok`: per million tokens), each stage is costed at
its role's prices. Time is the sample's rate, and only when the sample made model calls
(an estimate answered from the cache has no rate); small samples batch worse, so it
errs long.

    projection = project(summary, n_sources=2400, prices={"filter": (0.15, 0.6), ...})
    side_by_side(projection, real_summary)     # {stage: {calls: [est, actual], ...}}
"""

from __future__ import annotations

from typing import Any

STAGES = ("induce", "filter", "respond", "judge")
"""The stages an estimate projects (the ones that call models)."""
FIGURES = ("calls", "tokens_in", "tokens_out")


def stage_calls(stage: dict[str, Any]) -> int:
    """Every call a stage needed: answered from the cache or made."""
    return int(stage.get("cache_hits", 0)) + int(stage.get("model_calls", 0))


def _cost(tokens_in: float, tokens_out: float,
          price: tuple[float | None, float | None] | None) -> float | None:  # fmt: skip
    """The price of these tokens (None without a price for either direction)."""
    if price is None or (price[0] is None and price[1] is None):
        return None
    return round(tokens_in / 1e6 * (price[0] or 0.0) + tokens_out / 1e6 * (price[1] or 0.0), 4)


def project(summary: dict[str, Any], n_sources: int,
            prices: dict[str, tuple[float | None, float | None]]) -> dict[str, Any]:  # fmt: skip
    """The whole run's calls, tokens, kept shares, pairs, cost and time, from the summary
    of a run over a sample of its sources (`summary["sources"]` of `n_sources`)."""
    sampled = max(1, int(summary["sources"]))
    scale = n_sources / sampled
    stages = [s for s in summary["stages"] if s.get("stage") in STAGES]
    measured = any(s.get("model_calls") for s in stages)
    rows = []
    for s in stages:
        calls, t_in, t_out = stage_calls(s), s.get("tokens_in", 0), s.get("tokens_out", 0)
        rows.append({
            "stage": s["stage"],
            "sample": {"in": s["in"], "kept": s["kept"], "calls": calls, "tokens_in": t_in,
                       "tokens_out": t_out, "model_calls": s.get("model_calls", 0)},
            "kept_share": round(s["kept"] / s["in"], 4) if s["in"] else None,
            "calls": round(calls * scale),
            "tokens_in": round(t_in * scale),
            "tokens_out": round(t_out * scale),
            "cost": _cost(t_in * scale, t_out * scale, prices.get(s["stage"])),
        })  # fmt: skip
    pairs = sum((summary.get("dataset") or {}).values())
    costs = [r["cost"] for r in rows if r["cost"] is not None]
    wall = max((s.get("seconds", 0.0) for s in stages), default=0.0)
    return {
        "sources": n_sources,
        "sampled": sampled,
        "scale": round(scale, 4),
        "stages": rows,
        "pairs": round(pairs * scale),
        "sample_pairs": pairs,
        "calls": sum(r["calls"] for r in rows),
        "tokens_in": sum(r["tokens_in"] for r in rows),
        "tokens_out": sum(r["tokens_out"] for r in rows),
        "cost": round(sum(costs), 4) if costs else None,
        "minutes": round(wall * scale / 60, 1) if measured else None,
        "time_note": None if measured else "the sample was answered from the cache: no rate",
    }


def side_by_side(projection: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Each stage's projected and actual calls and tokens, and their ratio (actual /
    projected), and the same for pairs: what the funnel shows after a real run."""
    actual = {s["stage"]: s for s in summary["stages"] if s.get("stage") in STAGES}
    out: dict[str, Any] = {"sampled": projection["sampled"], "stages": {}}
    for row in projection["stages"]:
        real = actual.get(row["stage"])
        if real is None:
            continue
        values = {"calls": stage_calls(real), "tokens_in": real.get("tokens_in", 0),
                  "tokens_out": real.get("tokens_out", 0)}  # fmt: skip
        out["stages"][row["stage"]] = {key: {"estimate": row[key], "actual": values[key],
                                             "ratio": _ratio(values[key], row[key])}
                                       for key in FIGURES}  # fmt: skip
    pairs = sum((summary.get("dataset") or {}).values())
    out["pairs"] = {"estimate": projection["pairs"], "actual": pairs,
                    "ratio": _ratio(pairs, projection["pairs"])}  # fmt: skip
    return out


def _ratio(actual: float, estimate: float) -> float | None:
    return round(actual / estimate, 3) if estimate else None


def estimate_lines(projection: dict[str, Any]) -> list[str]:
    """The projection as a few lines for stderr: one per stage, then the totals."""
    lines = [f"estimate from {projection['sampled']} of {projection['sources']} sources "
             f"(x{projection['scale']:g}):"]  # fmt: skip
    for r in projection["stages"]:
        share = "-" if r["kept_share"] is None else f"{r['kept_share']:.0%}"
        cost = "" if r["cost"] is None else f", ${r['cost']:.2f}"
        lines.append(f"  {r['stage']:<8} {r['calls']:>8} calls, {r['tokens_in']:>10} tokens in, "
                     f"{r['tokens_out']:>9} out, {share} kept{cost}")  # fmt: skip
    minutes = projection["minutes"]
    lines.append(f"  total    {projection['calls']:>8} calls, {projection['tokens_in']:>10} "
                 f"tokens in, {projection['tokens_out']:>9} out; ~{projection['pairs']} pairs"
                 + ("" if projection["cost"] is None else f"; ${projection['cost']:.2f}")
                 + (f"; ~{minutes:g} min at the sample's rate" if minutes is not None
                    else f"; time: {projection['time_note']}"))  # fmt: skip
    return lines
