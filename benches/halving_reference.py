#!/usr/bin/env python3
"""Synchronous successive halving, written apart from sweeper's, to check its stops.

    python3 benches/halving_reference.py CURVES.json

CURVES.json is what `sweeper bench halving --curves-out` writes: the rule (mode, rungs,
keep as [numerator, denominator]) and each group's complete curves. At each rung, the
jobs still running are ranked by their value at that epoch (best first, a missing value
last, ties broken by key); ceil(n * keep) of them, at least one, go on. Prints the stops
as JSON, [{"job", "rung"}, ...], group by group, in the order the rungs make them.
"""
import json
import math
import sys
from fractions import Fraction


def value_at(curve, epoch):
    values = curve["values"]
    v = values[epoch - 1] if 0 < epoch <= len(values) else None
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def stops(rule, curves):
    keep = Fraction(rule["keep"][0], rule["keep"][1])
    sign = 1 if rule["mode"] == "min" else -1
    alive = list(curves)
    out = []
    for rung in rule["rungs"]:
        def order(curve):
            v = value_at(curve, rung)
            return (v is None, 0 if v is None else sign * v, curve["key"])
        ranked = sorted(alive, key=order)
        kept = max(1, math.ceil(len(ranked) * keep)) if ranked else 0
        out.extend({"job": c["job"], "rung": rung} for c in ranked[kept:])
        alive = ranked[:kept]
    return out


def main():
    with open(sys.argv[1]) as f:
        study = json.load(f)
    result = []
    for group in study["groups"]:
        result.extend(stops(study["rule"], group["curves"]))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
