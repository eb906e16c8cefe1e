//! A `metrics` recorder whose every registration and handle operation is a
//! call into the test (the library's reports are user code it must survive:
//! forks, panics, re-entry).

use std::sync::Arc;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// Calls `on_register` with the metric's name at every registration; the
/// handles it gives out call `on_use` at every operation (no-op handles when
/// `None`).
pub struct HookRecorder {
    pub on_register: fn(&str),
    pub on_use: Option<fn()>,
}

/// A handle whose every operation calls the function it holds.
struct CallHandle(fn());

impl CounterFn for CallHandle {
    fn increment(&self, _: u64) {
        (self.0)()
    }
    fn absolute(&self, _: u64) {
        (self.0)()
    }
}

impl GaugeFn for CallHandle {
    fn increment(&self, _: f64) {
        (self.0)()
    }
    fn decrement(&self, _: f64) {
        (self.0)()
    }
    fn set(&self, _: f64) {
        (self.0)()
    }
}

impl HistogramFn for CallHandle {
    fn record(&self, _: f64) {
        (self.0)()
    }
}

impl Recorder for HookRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        (self.on_register)(key.name());
        self.on_use.map_or_else(Counter::noop, |f| {
            Counter::from_arc(Arc::new(CallHandle(f)))
        })
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        (self.on_register)(key.name());
        self.on_use
            .map_or_else(Gauge::noop, |f| Gauge::from_arc(Arc::new(CallHandle(f))))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        (self.on_register)(key.name());
        self.on_use.map_or_else(Histogram::noop, |f| {
            Histogram::from_arc(Arc::new(CallHandle(f)))
        })
    }
}
