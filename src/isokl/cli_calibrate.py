"""The calibrate verb (`isokl calibrate`): one vector, or a method x layer grid calibrated jointly, each with its
random-direction control, then judged (`study.judge`, `report.leaderboard`); what a researcher reads is printed here.
`cli` parses the flags and dispatches; the shared command helpers (`use_threads`, `check_prompts`) live here too.
"""

from __future__ import annotations

import sys
import time

from .study.flags import ConfigError, floats
from .study.records import span
from .study.verbs import CalibrateConfig


def use_threads(n: int) -> int:
    from .core.model.models import set_threads

    return set_threads(n or None)


def layer_picks(cfg: CalibrateConfig, n_layers: int) -> dict[str, tuple[int, ...]]:
    """Every --layers set parsed once against the model's depth ('' = the method's default band: absent)."""
    from .study.flags import layers

    return {spec: layers("--layers", spec, n_layers, cfg.model) for spec in cfg.layer_sets() if spec}


def cmd_calibrate(cfg: CalibrateConfig) -> int:
    source = cfg.check()  # the model id resolved once (a hub id: one request); load reuses it
    threads = use_threads(cfg.threads)
    from .core.extract import extract
    from .core.formats.interop import from_file
    from .core.model.models import load

    shape = source.shape() if cfg.layers else None
    picks = layer_picks(cfg, shape[0]) if shape else None  # the depth is known before the weights load
    concept = cfg.load_concept()
    cal = cfg.calibration_prompts()
    t0 = time.time()
    lm = load(source, device=cfg.device, dtype=cfg.torch_dtype())
    if picks is None:
        picks = layer_picks(cfg, lm.n_layers)
    concept.check_for(lm, max(cfg.window, cfg.horizon if cfg.judging() else 0))
    if cfg.prompts:
        check_prompts(lm, cal, cfg.window, cfg.prompts, "--prompts")
    if not cfg.judging() and not cfg.no_judge and not cfg.vector:
        print(f"[isokl] --runtime {cfg.runtime}: the judge measures in transformers, so it is skipped", file=sys.stderr)
    if len(cfg.grid()) > 1:
        return calibrate_grid(cfg, lm, cal, t0, threads, picks)
    picked = picks.get(cfg.layer_sets()[0])
    vec = from_file(lm, cfg.vector, cal) if cfg.vector else extract(lm, concept.pairs(cfg.seed), cfg.method, layers=picked)
    source = "" if cfg.vector else f", pairs of {concept.name} seed {cfg.seed}"
    print(
        f"[isokl] calibrating {vec.method} on {cfg.model}, layers {span(vec.layers)}, T = {cfg.window}{source}, "
        f"{len(cal)} calibration prompts" + (" (and its random-direction control, jointly)" if cfg.judging() else ""),
        file=sys.stderr,
    )
    joint, controls = _calibrate(cfg, lm, [vec], cal, concept, start=cfg.start or None)
    res = joint.results[0]
    if res.status == "non_finite":
        from .core.runtimes.rollout import NonFiniteKL

        raise NonFiniteKL(res.error)
    path = res.vector.save(cfg.out)
    band = res.c_interval
    print(f"c* = {res.c_star:.6g}  [{band.lo:.4g}, {band.hi:.4g}]: {band.describe()}")
    print(f"p95 = {res.p95:.4f} (target {cfg.target} +- {cfg.tol})")
    print(f"converged = {str(res.converged).lower()} ({res.status})")
    print(f"evaluations = {res.evaluations}")
    c = res.vector.calibration
    where = f"{cfg.runtime} on {c.weights}" if c is not None and c.weights else str(cfg.torch_dtype())
    print(f"seconds = {time.time() - t0:.1f} (model load included; {threads} threads; {where})")
    print(f"saved {path}")
    if cfg.judging():
        _print_board(_judge(cfg, lm, [res], controls, concept), threads)
    if not res.converged:
        print(
            f"[isokl] NOT CONVERGED: {res.note or WHY[res.status]}; the saved vector records status {res.status!r}",
            file=sys.stderr,
        )
        return 2
    return 0


WHY = {
    "unreachable": "even the largest coefficient tried stays below the target: this method cannot move the model that far",
    "not_converged": "the solver ran out of evaluations before p95 reached the band",
    "non_finite": "the KL is not finite (NaN or inf logits)",
}


def _calibrate(cfg: CalibrateConfig, lm, vecs: list, cal, concept, start=None):
    """`isokl.calibrate` with the flags: the vectors and (judging) one random-direction control per layer set, jointly
    -> (the Grid, {layers: the control's result})."""
    from .api import calibrate
    from .core.calibrate import eval_lines

    grid = calibrate(
        lm,
        vecs,
        cal,
        T=cfg.window,
        controls=cfg.judging(),
        pairs=concept.pairs(cfg.seed),
        seed=cfg.seed,
        target=cfg.target,
        budgets=cfg.budget_list() if cfg.budgets else None,
        tol=cfg.tol,
        per_round=cfg.per_round,
        start=start,
        runtime=cfg.runtime,
        gguf=cfg.gguf or None,
        progress=eval_lines([v.label for v in vecs] + (_control_labels(vecs) if cfg.judging() else [])),
    )
    return grid, grid.controls


def _control_labels(vecs: list) -> list[str]:
    """The controls' labels in the order `isokl.calibrate` adds them: one per distinct layer set, first seen first."""
    first = {v.layers: v for v in reversed(vecs)}
    return [
        first[layers].label.replace(first[layers].method, "random_direction", 1)
        for layers in dict.fromkeys(v.layers for v in vecs)
    ]


def _judge(cfg: CalibrateConfig, lm, results, controls, concept, out=None):
    """`isokl.judge` with the flags, its phases on stderr -> the ranked Board (rows written into OUT/judge/ with out)."""
    from .api import judge

    print(f"[isokl] judging {len(results)} vectors and {len(controls)} controls on held-out prompts", file=sys.stderr)
    t0 = time.time()

    def phase(label: str) -> None:  # progress: the judge takes about as long as the calibration
        print(f"[isokl] judge ({time.time() - t0:.0f} s): {label}", file=sys.stderr)

    alphas = floats("--alphas", cfg.alphas)
    return judge(
        lm,
        results,
        concept,
        alphas=alphas,
        controls=list(controls.values()),
        T=cfg.horizon,
        pmass=cfg.pmass,
        seed=cfg.seed,
        progress=phase,
        out=out,
        scorers=cfg.scorers(),
        rank_by=cfg.rank_by or None,
        heldout=cfg.heldout or None,
    )


def _print_board(board, threads: int) -> None:
    from .report.leaderboard import lines

    for budget, b in board.by_budget.items():
        if board.others:
            print(f"at {budget:g} nats:")
        print("\n".join(lines(b)))
    secs = sum(b.settings["seconds"] for b in board.by_budget.values())
    each = f" for {len(board.by_budget)} budgets" if board.others else ""
    print(f"judged in {secs:.1f} s{each} ({threads} threads; held-out prompts, model load not included)")


def calibrate_grid(cfg: CalibrateConfig, lm, cal, t0: float, threads: int, picks: dict[str, tuple[int, ...]]) -> int:
    """Every (method, layer set) of the grid calibrated jointly (`calibrate_many`, with a random-direction control per
    layer set when judging): one vector file each in the --out folder, then the judge's rows (OUT/judge/) and the
    leaderboard as grid.md, grid.csv and grid.svg/png there (written last: an interrupted grid leaves its finished
    vectors and no table)."""
    from .core.extract import extract
    from .report import grid as grid_files
    from .report.leaderboard import budget_folder

    concept = cfg.load_concept()
    pairs = concept.pairs(cfg.seed)
    vecs = [extract(lm, pairs, method, layers=picks.get(spec)) for method, spec in cfg.grid()]
    print(
        f"[isokl] calibrating {len(vecs)} vectors jointly on {cfg.model} ({', '.join(v.label for v in vecs)}), "
        f"T = {cfg.window}, pairs of {concept.name} seed {cfg.seed}, {len(cal)} calibration prompts"
        + (", with a random-direction control per layer set" if cfg.judging() else ""),
        file=sys.stderr,
    )
    joint, controls = _calibrate(cfg, lm, vecs, cal, concept)
    out = cfg.out_dir()
    every = [*joint.results, *controls.values()]
    files = [f"{r.vector.method}_L{span(r.vector.layers).replace('..', '-').replace(', ', '_')}.safetensors" for r in every]
    for budget, g in joint.by_budget.items():  # another budget's vectors: the same names in OUT/budget-B/
        for res, fname in zip([*g.results, *g.controls.values()], files, strict=True):
            res.vector.save(out / budget_folder(budget, joint.budget) / fname)
    secs_cal = time.time() - t0
    stages = list({id(g.rounds): g.rounds for g in joint.by_budget.values()}.values())  # other budgets share one solve
    rows_run, n_rounds = sum(r.rows for rs in stages for r in rs), sum(len(rs) for rs in stages)
    title = f"# Calibrated grid: {cfg.model}, concept {concept.name} seed {cfg.seed}, T = {cfg.window}, {len(cal)} prompts"
    if cfg.judging():
        from .study.judge import name

        board = _judge(cfg, lm, joint, controls, concept, out=out)
        by_name = {name(r.vector): f for r, f in zip(every, files, strict=True)}
        grid_files.write_grid(out, board, title, by_name)
        _print_board(board, threads)
    else:
        rows = [
            _grid_row(r, budget_folder(b, joint.budget) + f, b)
            for b, g in joint.by_budget.items()
            for r, f in zip(g.results, files, strict=True)
        ]
        grid_files.write_calibration_grid(out, rows, title)
        print("\n".join(grid_files.calibration_lines(rows)))
    print(
        f"seconds = {secs_cal:.1f} to calibrate (model load included; {threads} threads; {cfg.torch_dtype()}); "
        f"{n_rounds} batched rounds, {rows_run} rows in all"
    )
    print(f"saved {len(files) * len(joint.by_budget)} vectors, {out / 'grid.md'} and {out / 'grid.csv'}")
    failed = [r for g in joint.by_budget.values() for r in g.results if not r.converged]
    for r in failed:
        print(f"[isokl] NOT CONVERGED: {r.vector.label}: {r.error or r.note or WHY[r.status]}", file=sys.stderr)
    return 2 if failed else 0


def _grid_row(res, fname: str, budget: float) -> dict:
    v, band = res.vector, res.c_interval
    return {
        "budget": f"{budget:g}",
        "method": v.method,
        "layers": span(v.layers),
        "c_star": f"{res.c_star:.6g}",
        "c_lo": f"{band.lo:.4g}",
        "c_hi": f"{band.hi:.4g}",
        "p95": f"{res.p95:.4f}",
        "status": res.status,
        "evaluations": res.evaluations,
        "file": fname,
    }


def check_prompts(lm, prompts, T: int, path: str, flag: str) -> None:
    """Every prompt plus T generated tokens fits the model's context: else one line naming the flag, file, line and id."""
    from .core.formats.concept import ConceptError, check_context

    try:
        check_context(lm, prompts, T, path, path)
    except ConceptError as e:
        raise ConfigError(f"{flag}: {e}") from None
