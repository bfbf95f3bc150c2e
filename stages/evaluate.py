"""Stage `evaluate`: generate the test faces with the teacher (the EMA generator) and with its
distilled student, and score both (`spade.evaluate.evaluate`); the student's numbers are the
`student` block."""

from spade.config import load_params
from spade.console import run
from spade.devices import resolve_device
from spade.evaluate import Settings, evaluate
from spade.numerics import pin_cpu_numerics


def main() -> None:
    params = load_params()
    settings = Settings(params.evaluate, params.features, resolve_device(params.features.device))
    pin_cpu_numerics(params.cpu, settings.device)
    evaluate(settings)


if __name__ == "__main__":
    run(main)
