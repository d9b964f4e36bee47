//! Which live containers use each device the device hook reports, and which GPUs are shared.
//! Pure: the model feeds it device accesses and deletions, and reports what changed.

use foldhash::{HashMap, HashSet};

/// A device's users: the live containers (by cgroup id) whose access to it was not denied.
#[derive(Debug, Default)]
struct Device {
    /// Whether it is a GPU (not a control node).
    is_gpu: bool,
    /// Its short name (`nvidia0`, or `MAJOR:MINOR`), as metrics label it.
    gpu: String,
    users: HashSet<u64>,
}

/// Live containers using each device, by device number.
#[derive(Debug, Default)]
pub struct DeviceUsers {
    devices: HashMap<(u32, u32), Device>,
}

/// A GPU whose number of users changed: it has `containers` now, and `shared` GPUs are used by
/// more than one live container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuUsers {
    pub gpu: String,
    pub containers: usize,
    pub shared: usize,
}

impl DeviceUsers {
    /// Container `owner` was let use device `number`. Returns whether it is its first use of
    /// the device, with the other live containers using it then.
    pub fn add(
        &mut self,
        number: (u32, u32),
        is_gpu: bool,
        gpu: &str,
        owner: u64,
    ) -> Option<Vec<u64>> {
        let device = self.devices.entry(number).or_insert_with(|| Device {
            is_gpu,
            gpu: gpu.to_string(),
            users: HashSet::default(),
        });
        device.users.insert(owner).then(|| {
            device
                .users
                .iter()
                .copied()
                .filter(|&u| u != owner)
                .collect()
        })
    }

    /// The GPU of device `number`, with its users now.
    pub fn gpu_users(&self, number: (u32, u32)) -> Option<GpuUsers> {
        let device = self.devices.get(&number).filter(|d| d.is_gpu)?;
        Some(GpuUsers {
            gpu: device.gpu.clone(),
            containers: device.users.len(),
            shared: self.shared(),
        })
    }

    /// Container `owner` is gone: the GPUs it used, with their users now.
    pub fn remove(&mut self, owner: u64) -> Vec<GpuUsers> {
        let mut changed = Vec::new();
        for device in self.devices.values_mut() {
            if device.users.remove(&owner) && device.is_gpu {
                changed.push((device.gpu.clone(), device.users.len()));
            }
        }
        self.devices.retain(|_, d| !d.users.is_empty());
        let shared = self.shared();
        changed
            .into_iter()
            .map(|(gpu, containers)| GpuUsers {
                gpu,
                containers,
                shared,
            })
            .collect()
    }

    /// GPUs used by more than one live container.
    fn shared(&self) -> usize {
        self.devices
            .values()
            .filter(|d| d.is_gpu && d.users.len() > 1)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_sharing_follow_accesses_and_deletions() {
        let mut users = DeviceUsers::default();
        let (gpu0, ctl) = ((195, 0), (195, 255));
        assert_eq!(users.add(gpu0, true, "nvidia0", 1), Some(vec![]));
        assert_eq!(users.add(gpu0, true, "nvidia0", 1), None, "not a first use");
        assert_eq!(users.add(gpu0, true, "nvidia0", 2), Some(vec![1]));
        assert_eq!(users.add(ctl, false, "nvidiactl", 1), Some(vec![]));
        let now = users.gpu_users(gpu0).expect("a GPU");
        assert_eq!((now.containers, now.shared), (2, 1));
        assert_eq!(users.gpu_users(ctl), None, "a control node is no GPU");
        assert_eq!(
            users.remove(1),
            vec![GpuUsers {
                gpu: "nvidia0".into(),
                containers: 1,
                shared: 0
            }]
        );
        assert_eq!(
            users.remove(2),
            vec![GpuUsers {
                gpu: "nvidia0".into(),
                containers: 0,
                shared: 0
            }]
        );
        assert_eq!(users.gpu_users(gpu0), None);
    }
}
