//! The boards a simulated fleet is made of and the facts each reports: a mix of
//! Raspberry Pi models (arm64 and 32-bit arm), their capacity, and usage figures and a
//! SoC temperature that wander between reports as a real board's do. Pure: the wander
//! comes from a small seeded generator, so a node's figures are reproducible.

use punnet_api::wire::NodeFacts;

/// One kind of board in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Board {
    pub model: &'static str,
    /// `kubernetes.io/arch`.
    pub arch: &'static str,
    /// The image platform variant.
    pub platform: &'static str,
    pub cpus: u32,
    pub memory_mib: u64,
    pub kernel: &'static str,
}

/// The mix, in the proportions of a typical hobby-to-small-business fleet: mostly Pi 4s,
/// some Pi 5s and 3s, a few Zeros. Node `i` gets `BOARDS[i % BOARDS.len()]`.
pub const BOARDS: [Board; 10] = [
    PI4_4G, PI4_2G, PI4_4G, PI5_8G, PI4_4G, PI3_BPLUS, PI4_2G, PI_ZERO_2W, PI5_8G, PI4_4G,
];

const PI4_4G: Board = Board {
    model: "Raspberry Pi 4 Model B Rev 1.4",
    arch: "arm64",
    platform: "arm64",
    cpus: 4,
    memory_mib: 4096,
    kernel: "6.6.51+rpt-rpi-v8",
};
const PI4_2G: Board = Board {
    memory_mib: 2048,
    model: "Raspberry Pi 4 Model B Rev 1.2",
    ..PI4_4G
};
const PI5_8G: Board = Board {
    model: "Raspberry Pi 5 Model B Rev 1.0",
    memory_mib: 8192,
    kernel: "6.6.51+rpt-rpi-2712",
    ..PI4_4G
};
const PI3_BPLUS: Board = Board {
    model: "Raspberry Pi 3 Model B Plus Rev 1.3",
    arch: "arm",
    platform: "arm/v7",
    cpus: 4,
    memory_mib: 1024,
    kernel: "6.6.51+rpt-rpi-v7",
};
const PI_ZERO_2W: Board = Board {
    model: "Raspberry Pi Zero 2 W Rev 1.0",
    memory_mib: 512,
    ..PI4_4G
};

pub fn board_of(index: usize) -> Board {
    BOARDS[index % BOARDS.len()]
}

/// A xorshift generator: enough randomness for wandering figures, no dependency.
#[derive(Debug, Clone)]
pub struct Wander(u64);

impl Wander {
    pub fn new(seed: u64) -> Wander {
        Wander(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// What one simulated board reports about itself; `usage` moves the figures on.
#[derive(Debug, Clone)]
pub struct BoardState {
    pub board: Board,
    pub index: usize,
    rng: Wander,
    cpu_millis: u64,
    temp_millic: i64,
}

impl BoardState {
    pub fn new(index: usize) -> BoardState {
        let mut rng = Wander::new(index as u64 + 1);
        let cpu_millis = 50 + rng.below(300);
        let temp_millic = 42_000 + rng.below(8_000) as i64;
        BoardState {
            board: board_of(index),
            index,
            rng,
            cpu_millis,
            temp_millic,
        }
    }

    /// The board's LAN address: one /16 per 65,000 boards, never `.0` or `.255`.
    pub fn address(&self) -> String {
        let n = self.index as u32;
        format!(
            "10.{}.{}.{}",
            100 + n / 64_516,
            (n / 254) % 254 + 1,
            n % 254 + 1
        )
    }

    /// Moves usage and temperature a step (`running` containers add load) and returns
    /// the facts of a report.
    pub fn facts(&mut self, node: &str, running: usize) -> NodeFacts {
        let cap = u64::from(self.board.cpus) * 1000;
        let target = (40 + running as u64 * 25).min(cap);
        let step = self.rng.below(61) as i64 - 30;
        let cpu = (self.cpu_millis as i64 + step + (target as i64 - self.cpu_millis as i64) / 4)
            .clamp(5, cap as i64);
        self.cpu_millis = cpu as u64;
        // The SoC warms with load and cools towards ~45 °C.
        let goal = 45_000 + (self.cpu_millis as i64 * 20_000 / cap as i64);
        self.temp_millic += (goal - self.temp_millic) / 5 + self.rng.below(601) as i64 - 300;
        let memory_bytes = self.board.memory_mib << 20;
        let used = (120 << 20) + running as u64 * (12 << 20) + self.rng.below(8 << 20);
        NodeFacts {
            hostname: node.to_string(),
            arch: self.board.arch.to_string(),
            os: "linux".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel_version: self.board.kernel.to_string(),
            machine_id: format!("{:032x}", self.index as u128 * 0x1000_0000_0001 + 7),
            cpus: self.board.cpus,
            memory_bytes,
            addresses: vec![self.address()],
            agent_version: concat!(env!("CARGO_PKG_VERSION"), "-sim").into(),
            labels: [("punnet.io/simulated".to_string(), "true".to_string())].into(),
            board_model: self.board.model.to_string(),
            cpu_usage_millis: self.cpu_millis,
            memory_available_bytes: memory_bytes.saturating_sub(used),
            disk_total_bytes: 32_000_000_000,
            disk_free_bytes: 21_000_000_000 - self.rng.below(1_000_000),
            temperature_millicelsius: Some(self.temp_millic),
            throttled: Some(0),
            cgroup_version: 2,
            memory_cgroup: true,
            memory_cgroup_problem: None,
            platform: self.board.platform.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_mixes_arm64_and_arm_boards() {
        let archs: std::collections::BTreeSet<&str> = (0..10).map(|i| board_of(i).arch).collect();
        assert_eq!(archs, ["arm", "arm64"].into());
        assert!((0..10).any(|i| board_of(i).memory_mib == 512));
    }

    #[test]
    fn figures_wander_within_the_board() {
        let mut b = BoardState::new(5);
        let first = b.facts("sim-5", 0);
        assert_eq!(first.platform, "arm/v7");
        assert_eq!(first.memory_bytes, 1 << 30);
        let mut temps = Vec::new();
        for _ in 0..200 {
            let f = b.facts("sim-5", 10);
            assert!(f.cpu_usage_millis <= 4000);
            assert!(f.memory_available_bytes < f.memory_bytes);
            temps.push(f.temperature_millicelsius.unwrap());
        }
        assert!(
            temps.iter().all(|t| (30_000..85_000).contains(t)),
            "{temps:?}"
        );
        assert!(temps.iter().min() != temps.iter().max(), "it moves");
    }

    #[test]
    fn addresses_are_distinct_and_valid() {
        let all: std::collections::BTreeSet<String> =
            (0..70_000).map(|i| BoardState::new(i).address()).collect();
        assert_eq!(all.len(), 70_000);
        assert!(all
            .iter()
            .all(|a| a.parse::<std::net::Ipv4Addr>().is_ok() && !a.ends_with(".0")));
    }
}
