"""Health signals and the decision to hold: replica lag (:mod:`.lag`) by heartbeat (:mod:`.heartbeat`),
load (:mod:`.load`), critical load (:mod:`.critical`), error-rate signals (:mod:`.errorsignal`), the
throttler (:mod:`.throttler`) and the seed's symptom queries (:mod:`.diagnose`)."""
