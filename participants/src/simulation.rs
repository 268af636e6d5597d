//! The simulated physical world the store's worker acts in: the road between the warehouse and a
//! store, and how often a receipt or a pick fails. Default: instant and reliable. Read from the
//! same environment as the rest of the configuration, and checked at start-up. Every other worker
//! reads its own settings the same way (`payment::PaymentWorker`).

use std::time::Duration;

use platform::config::{ConfigError, Section, Vars};

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Simulation {
    /// `TRANSIT_DELAY_MS`: the time a shipment spends on the road before the store can receive it.
    pub transit_delay: Duration,
    /// `RECEIPT_FAILURE_RATE`: the fraction (0.0–1.0) of receipts the store refuses (damaged
    /// goods, a refused delivery).
    pub receipt_failure_rate: f64,
    /// `PICKING_FAILURE_RATE`: the fraction of paid orders the store cannot pick (goods not found
    /// on the shelf).
    pub picking_failure_rate: f64,
}

impl Section for Simulation {
    fn read(vars: &Vars) -> Result<Self, ConfigError> {
        let mut simulation = Self::default();
        vars.millis("TRANSIT_DELAY_MS", &mut simulation.transit_delay)?;
        vars.rate("RECEIPT_FAILURE_RATE", &mut simulation.receipt_failure_rate)?;
        vars.rate("PICKING_FAILURE_RATE", &mut simulation.picking_failure_rate)?;
        Ok(simulation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Simulation, ConfigError> {
        Simulation::read(&pairs.iter().copied().collect())
    }

    #[test]
    fn the_world_is_instant_and_reliable_unless_told_otherwise() {
        assert_eq!(read(&[]).unwrap(), Simulation::default());
        let set = read(&[("TRANSIT_DELAY_MS", "250"), ("RECEIPT_FAILURE_RATE", "0.25")]).unwrap();
        assert_eq!(set.transit_delay, Duration::from_millis(250));
        assert!((set.receipt_failure_rate - 0.25).abs() < f64::EPSILON);
    }

    #[test]
    fn a_rate_outside_zero_to_one_names_its_variable() {
        for (name, value) in
            [("RECEIPT_FAILURE_RATE", "1.5"), ("PICKING_FAILURE_RATE", "-0.1"), ("RECEIPT_FAILURE_RATE", "x")]
        {
            let err = read(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        assert!(read(&[("TRANSIT_DELAY_MS", "2s")]).is_err());
    }
}
