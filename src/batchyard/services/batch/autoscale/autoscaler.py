"""Autoscaling pools: `enableAutoScale` at creation, enableautoscale, disableautoscale,
evaluateautoscale, and a background loop that samples each autoscaling pool's metrics and
evaluates its formula every `autoScaleEvaluationInterval`, as Azure does.

A formula is checked when it is given: one that does not parse is refused with 400
AutoScalingFormulaSyntaxError naming the line and column. A run that fails (an undefined
variable, too few samples, ...) is recorded in the pool's `autoScaleRun.error`
(AutoScalingFormulaEvaluationError) and changes nothing. A successful run sets the pool's
targets (truncated to whole nodes, never below zero) and resizes it with the formula's
`$NodeDeallocationOption`.

The evaluation interval is Azure's: 5 minutes to 168 hours, default 15 minutes; the
least is `BATCHYARD_MIN_AUTOSCALE_INTERVAL` seconds (default 300), for tests.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta

from ....store.resources import Resource
from ...errors import Conflict, InvalidInput
from .. import batch_input as bi
from ..pool_spec import MAX_TARGET_NODES
from ..background import PokedLoop
from ..durations import format_duration, parse_duration
from ..pools import check_conditions, iso_now, now
from .formula import DEALLOCATION, DEDICATED, LOW_PRIORITY, MAX_LENGTH, Context, FormulaSyntaxError, Run, \
    evaluate, parse
from .metrics import PoolMetrics

DEFAULT_INTERVAL = timedelta(minutes=15)
MAX_INTERVAL = timedelta(hours=168)
EVALUATION_ERROR = "AutoScalingFormulaEvaluationError"


class Autoscaler(PokedLoop):
    def __init__(self, pools, metrics: PoolMetrics, settings):
        super().__init__("autoscaler", tick=min(1.0, settings.autoscale_sample_seconds), gap=0.05)
        self.pools = pools
        self.metrics = metrics
        self.settings = settings
        pools.autoscaler = self

    def start(self) -> None:
        self.start_loop()

    def stop(self) -> None:
        self.stop_loop()

    # settings -----------------------------------------------------------------------------------

    def creation_fields(self, body: dict) -> dict:
        """The autoscale properties of a new pool's body (Pools.create)."""
        if not bi.boolean(body, "enableAutoScale", default=False):
            if body.get("autoScaleFormula") is not None:
                raise bi.invalid("autoScaleFormula", body["autoScaleFormula"],
                                 "autoScaleFormula must not be specified if enableAutoScale is false.")
            return {"enableAutoScale": False}
        for name in ("targetDedicatedNodes", "targetLowPriorityNodes"):
            if body.get(name) is not None:
                raise bi.invalid(name, body[name], f"{name} must not be specified if enableAutoScale is true.")
        formula = self._formula(body, required_=True)
        return {"enableAutoScale": True, "autoScaleFormula": formula,
                "autoScaleEvaluationInterval": format_duration(self._interval(body))}

    def _formula(self, body: dict, required_: bool) -> str | None:
        formula = body.get("autoScaleFormula")
        if formula is None:
            if required_:
                raise bi.missing("autoScaleFormula")
            return None
        if not isinstance(formula, str):
            raise bi.invalid("autoScaleFormula", formula, "The formula must be a string.")
        if len(formula) > MAX_LENGTH:
            raise InvalidInput("AutoScalingFormulaTooLong", "The specified auto-scaling formula exceeds lengths "
                               "limit.", details=[{"key": "MaxLength", "value": str(MAX_LENGTH)}])
        try:
            parse(formula)
        except FormulaSyntaxError as exc:
            raise InvalidInput(
                "AutoScalingFormulaSyntaxError",
                f"The specified auto-scaling formula has a syntax error at line {exc.line}, column {exc.column}: "
                f"{exc.message}",
                details=[{"key": "Line", "value": str(exc.line)}, {"key": "Column", "value": str(exc.column)},
                         {"key": "Message", "value": exc.message}]) from None
        return formula

    def _interval(self, body: dict) -> timedelta:
        text = body.get("autoScaleEvaluationInterval")
        if text is None:
            return DEFAULT_INTERVAL
        interval = parse_duration(text, "autoScaleEvaluationInterval")
        least = self.settings.min_autoscale_interval
        if not least <= interval <= MAX_INTERVAL:
            raise bi.invalid("autoScaleEvaluationInterval", text,
                             f"The interval must be between {format_duration(least)} and "
                             f"{format_duration(MAX_INTERVAL)}.")
        return interval

    # operations ---------------------------------------------------------------------------------

    def start_pool(self, pool: Resource) -> None:
        """A pool created with autoscale: its formula runs at once, for its first targets."""
        with self.pools.lock:
            self._run_and_apply(pool)

    def enable(self, account: Resource, pool_id: str, body: dict, conditions=None, throttled: bool = True) -> Resource:
        """enableautoscale; not `throttled` for the management plane's scaleSettings, which
        Azure does not hold to the data plane's one call in 30 seconds."""
        body = bi.body_object(body)
        with self.pools.lock:
            pool = self.pools.get(account, pool_id)
            check_conditions(pool.body, conditions)
            self._active(pool)
            enabled = pool.body.get("enableAutoScale", False)
            formula = self._formula(body, required_=not enabled)
            if enabled and formula is None and body.get("autoScaleEvaluationInterval") is None:
                raise bi.missing("autoScaleFormula")
            if not enabled and pool.body["allocationState"] != "steady":
                raise Conflict("PoolBeingResized", "The specified pool is being resized; wait for its "
                               "allocationState to be steady, or stop the resize, before enabling autoscale.")
            interval = self._interval(body) if body.get("autoScaleEvaluationInterval") is not None or not enabled \
                else None
            if throttled:
                self._throttle_enable(pool)
            pool.body["enableAutoScale"] = True
            if formula is not None:
                pool.body["autoScaleFormula"] = formula
            if interval is not None:
                pool.body["autoScaleEvaluationInterval"] = format_duration(interval)
            self._run_and_apply(pool)
            return pool

    def _throttle_enable(self, pool: Resource) -> None:
        """Azure takes one enableautoscale on a pool every 30 seconds: a valid request sooner
        after the last one it took is refused (an invalid one is refused as invalid first)."""
        last = pool.internal.get("autoscale_enabled_at")
        moment = time.time()
        if last is not None and 0 <= moment - last < self.settings.autoscale_enable_gap_seconds:
            raise Conflict("TooManyEnableAutoScaleRequests",  # Azure's words, whatever the gap set here
                           "Enable AutoScale requests for the same pool must be separated by at least 30 seconds.")
        pool.internal["autoscale_enabled_at"] = moment

    def disable(self, account: Resource, pool_id: str, conditions=None) -> Resource:
        """The pool keeps the targets the formula set last."""
        with self.pools.lock:
            pool = self.pools.get(account, pool_id)
            check_conditions(pool.body, conditions)
            self._active(pool)
            pool.body["enableAutoScale"] = False
            for name in ("autoScaleFormula", "autoScaleEvaluationInterval", "autoScaleRun"):
                pool.body.pop(name, None)
            pool.internal.pop("autoscale_next", None)
            self.metrics.forget(pool.id.lower())
            return self.pools.save(pool)

    def evaluate_formula(self, account: Resource, pool_id: str, body: dict) -> dict:
        """evaluateautoscale: the run's result, not applied."""
        body = bi.body_object(body)
        pool = self.pools.get(account, pool_id)
        if not pool.body.get("enableAutoScale"):
            raise Conflict("AutoScalingNotEnabled", "Automatic scaling is not enabled on the specified pool; "
                           "enable it before evaluating a formula.")
        formula = self._formula(body, required_=True)
        return self._run_record(self._run(pool, formula))

    @staticmethod
    def _active(pool: Resource) -> None:
        if pool.body["state"] == "deleting":
            raise Conflict("PoolBeingDeleted", "The specified pool has been marked for deletion and is being "
                                               "reclaimed.")

    # runs ---------------------------------------------------------------------------------------

    def _run(self, pool: Resource, formula: str) -> Run:
        body = pool.body
        targets = {DEDICATED: float(body["targetDedicatedNodes"]), LOW_PRIORITY: float(body["targetLowPriorityNodes"]),
                   DEALLOCATION: pool.internal.get("resize", {}).get("deallocation", "requeue")}
        doubles = {"$CurrentDedicatedNodes": float(body["currentDedicatedNodes"]),
                   "$CurrentLowPriorityNodes": float(body["currentLowPriorityNodes"]),
                   "$TaskSlotsPerNode": float(body.get("taskSlotsPerNode", 1))}
        context = Context(now(), targets, doubles, self.metrics.metrics(pool))
        run = evaluate(parse(formula), context)
        if run.error is None:
            for name in (DEDICATED, LOW_PRIORITY):
                if not math.isfinite(run.settable[name]):
                    return Run(targets, {}, f"{name} is not a finite number.")
        return run

    @staticmethod
    def _run_record(run: Run) -> dict:
        record = {"timestamp": iso_now(), "results": run.results}
        if run.error is not None:
            record["error"] = {"code": EVALUATION_ERROR, "message": "The autoscale formula could not be evaluated.",
                               "values": [{"name": "Message", "value": run.error}]}
        return record

    def _run_and_apply(self, pool: Resource) -> None:
        run = self._run(pool, pool.body["autoScaleFormula"])
        pool.body["autoScaleRun"] = self._run_record(run)
        interval = parse_duration(pool.body["autoScaleEvaluationInterval"], "autoScaleEvaluationInterval")
        pool.internal["autoscale_next"] = time.time() + interval.total_seconds()
        if run.error is None:
            # a target beyond what a pool may ask for (1e300, rand() * 1e308) asks for the most
            dedicated = int(min(max(0.0, run.settable[DEDICATED]), MAX_TARGET_NODES))
            low_priority = int(min(max(0.0, run.settable[LOW_PRIORITY]), MAX_TARGET_NODES))
            self.pools.apply_targets(pool, dedicated, low_priority, run.settable[DEALLOCATION])
        else:
            self.pools.save(pool)

    # the loop -----------------------------------------------------------------------------------

    def one_pass(self) -> None:
        moment = now()
        self.each([p for p in self.pools.all_pools() if p.body.get("enableAutoScale") and p.body["state"] == "active"],
                   lambda pool: self._autoscale(pool, moment))

    def _autoscale(self, pool: Resource, moment: datetime) -> None:
        if self.metrics.due(pool, moment):
            self.metrics.sample(pool, moment)
        if pool.internal.get("autoscale_next", 0) <= time.time():
            with self.pools.lock:
                current = self.pools.store.get(pool.id)
                if current is not None and current.body.get("enableAutoScale") and current.body["state"] == "active":
                    self._run_and_apply(current)
