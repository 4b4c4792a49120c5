//! The descriptor set a listener's reflection serves: exactly the services of that listener.
//!
//! The build keeps one descriptor set of every tuikuan proto ([`crate::FILE_DESCRIPTOR_SET`]).
//! A listener's set keeps the files that define its services, with every other service removed
//! from them, plus the files those depend on (for message types), so that reflection lists and
//! describes what the listener serves and nothing else.

use std::collections::BTreeSet;

use prost::Message;
use prost_types::FileDescriptorSet;
use tuikuan_kernel::Error;

/// The encoded descriptor set for the services `names` (fully qualified).
pub fn descriptor_set_of(names: &[&str]) -> Result<Vec<u8>, Error> {
    let mut set = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
        .map_err(|e| Error::internal(format!("descriptor set: {e}")))?;
    let mut keep: BTreeSet<String> = BTreeSet::new();
    for file in &mut set.file {
        let package = file.package().to_string();
        file.service
            .retain(|s| names.contains(&format!("{package}.{}", s.name()).as_str()));
        if !file.service.is_empty() {
            keep.insert(file.name().to_string());
        }
    }
    // Dependencies, transitively.
    loop {
        let deps: Vec<String> = set
            .file
            .iter()
            .filter(|f| keep.contains(f.name()))
            .flat_map(|f| f.dependency.iter().cloned())
            .filter(|d| !keep.contains(d))
            .collect();
        if deps.is_empty() {
            break;
        }
        keep.extend(deps);
    }
    set.file.retain(|f| keep.contains(f.name()));
    Ok(set.encode_to_vec())
}

/// The fully qualified names of the services in an encoded descriptor set.
pub fn services_in(encoded: &[u8]) -> Vec<String> {
    let Ok(set) = FileDescriptorSet::decode(encoded) else {
        return Vec::new();
    };
    set.file
        .iter()
        .flat_map(|f| {
            let package = f.package().to_string();
            f.service
                .iter()
                .map(move |s| format!("{package}.{}", s.name()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_describes_only_its_services() {
        let public = descriptor_set_of(&["tuikuan.business.v1.MerchantService"]).unwrap();
        assert_eq!(
            services_in(&public),
            vec!["tuikuan.business.v1.MerchantService".to_string()]
        );
        let refund = descriptor_set_of(&[
            "tuikuan.refund.v1.RefundService",
            "tuikuan.refund.v1.BatchService",
        ])
        .unwrap();
        let mut got = services_in(&refund);
        got.sort();
        assert_eq!(
            got,
            vec![
                "tuikuan.refund.v1.BatchService".to_string(),
                "tuikuan.refund.v1.RefundService".to_string()
            ]
        );
    }
}
