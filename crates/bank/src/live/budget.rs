//! How many refused notifications the bank stores: the notification listener is public, so a
//! flood of forged notifications must not grow the bank's database without bound. Over the
//! budget a refusal is still answered and logged, but not stored in `channel_notifications`.
//! Notifications whose signature verified are always stored (only the channel can send them).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Refused, unverifiable notifications stored per channel and minute.
pub const REFUSALS_STORED_PER_MINUTE: u32 = 60;

/// Per channel: the current minute and how many refusals were stored in it.
#[derive(Debug, Default)]
pub struct RefusalBudget {
    used: Mutex<BTreeMap<String, (i64, u32)>>,
}

impl RefusalBudget {
    /// Whether one more refusal on `channel` may be stored at `now_ms` (and counts it).
    pub fn take(&self, channel: &str, now_ms: i64) -> bool {
        let minute = now_ms.div_euclid(60_000);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let entry = used.entry(channel.to_string()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= REFUSALS_STORED_PER_MINUTE {
            return false;
        }
        entry.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_stores_at_most_the_budget_per_channel() {
        let b = RefusalBudget::default();
        let t = 1_764_640_000_000;
        let stored = (0..100).filter(|_| b.take("WECHAT", t)).count();
        assert_eq!(stored, REFUSALS_STORED_PER_MINUTE as usize);
        assert!(b.take("ALIPAY", t), "each channel has its own budget");
        assert!(!b.take("WECHAT", t + 59_999 - t % 60_000));
        assert!(b.take("WECHAT", t - t % 60_000 + 60_000), "a new minute");
    }
}
