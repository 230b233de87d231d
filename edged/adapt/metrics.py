"""Prometheus metrics of the adaptation loop, in the daemon's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STATES = ("serving", "collecting", "training", "pruning", "validating", "swapping", "probation")
SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class AdaptMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.drift_kl = Gauge("edged_drift_kl", "KL(current input window || reference), nats", registry=r)
        self.drift_js = Gauge(
            "edged_drift_js", "Jensen-Shannon of the input window vs reference, nats", registry=r
        )
        self.agreement = Gauge(
            "edged_fidelity_top1_agreement_ratio", "Top-1 agreement of the served model with the master",
            registry=r,
        )
        self.output_kl = Gauge(
            "edged_fidelity_output_kl", "Mean KL(master || served) of output distributions", registry=r
        )
        self.accuracy_ratio = Gauge(
            "edged_feedback_accuracy_ratio", "Accuracy over the recent labelled predictions", registry=r
        )
        self.adaptations = Counter("edged_adaptations", "Adaptations, by outcome", ["outcome"], registry=r)
        self.events = Counter("edged_adaptation_events", "Adaptation events, by kind", ["kind"], registry=r)
        self.adaptation_seconds = Histogram(
            "edged_adaptation_duration_seconds", "Trigger to outcome of an adaptation",
            buckets=SECONDS_BUCKETS, registry=r,
        )
        self.training_seconds = Histogram(
            "edged_adaptation_training_seconds", "Retraining (scores, QSA) per adaptation",
            buckets=SECONDS_BUCKETS, registry=r,
        )
        self.state = Gauge(
            "edged_adaptation_state", "1 for the controller's current state", ["state"], registry=r
        )
        self.bad_labels = Counter(
            "edged_feedback_bad_labels", "Feedback labels outside the model's classes", registry=r
        )
        self.adaptation_state("serving")
        self.fidelity(1.0, 0.0)  # the master serves at start: it agrees with itself

    def adaptation_event(self, event) -> None:
        self.events.labels(event.kind).inc()

    def adaptation_state(self, state: str) -> None:
        for s in STATES:
            self.state.labels(s).set(1.0 if s == state else 0.0)

    def drift(self, kl: float, js: float) -> None:
        self.drift_kl.set(kl)
        self.drift_js.set(js)

    def fidelity(self, agreement: float, output_kl: float) -> None:
        self.agreement.set(agreement)
        self.output_kl.set(output_kl)

    def accuracy(self, value: float) -> None:
        self.accuracy_ratio.set(value)
