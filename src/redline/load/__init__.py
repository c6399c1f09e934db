"""A load-test engine whose numbers can be trusted: ``redline load run PLAN``.

Plans are YAML files or Python modules; in Python::

    from redline.load import ConstantVUs, scenario

    @scenario(executor=ConstantVUs(vus=10, duration=30))
    async def browse(vu):
        response = await vu.get("/api/calls", name="list-calls")
        vu.check(response, status=200)

and ``redline load run plan.py --target http://127.0.0.1:8000``, or ``await run(plan, url)``
from code. See docs/load.md.
"""

from redline.load._errors import PlanError, RedlineLoadError
from redline.load._http import Response, Target
from redline.load._metrics import Recorder
from redline.load._plan import (
    Capture,
    Check,
    ConstantArrivalRate,
    ConstantVUs,
    Feed,
    Plan,
    RampingArrivalRate,
    RampingVUs,
    Request,
    Scenario,
    Stage,
    Think,
    apply_preset,
    dump_plan,
    load_plan,
    scenario,
)
from redline.load._runner import RunResult, run
from redline.load._vu import VU
from redline.load._workers import PlanSpec, run_workers

__all__ = [
    "VU",
    "Capture",
    "Check",
    "ConstantArrivalRate",
    "ConstantVUs",
    "Feed",
    "Plan",
    "PlanError",
    "PlanSpec",
    "RampingArrivalRate",
    "RampingVUs",
    "Recorder",
    "RedlineLoadError",
    "Request",
    "Response",
    "RunResult",
    "Scenario",
    "Stage",
    "Target",
    "Think",
    "apply_preset",
    "dump_plan",
    "load_plan",
    "run",
    "run_workers",
    "scenario",
]
