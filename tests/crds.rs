//! The CRDs committed in the chart are exactly what the code generates (`make generate`).

#[test]
fn the_committed_crds_match_the_code() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/cadbroker-crds/templates/crds.yaml"
    ))
    .expect("charts/cadbroker-crds/templates/crds.yaml exists");
    let generated = cadbroker::crd::crds_yaml().unwrap();
    assert!(
        committed == generated,
        "the committed CRDs are stale: run `make generate` and commit the result"
    );
}

#[test]
fn the_crds_carry_printer_columns_status_and_validation() {
    let yaml = cadbroker::crd::crds_yaml().unwrap();
    for needle in [
        "kind: CapacityPool",
        "kind: WorkstationSession",
        "jsonPath: .spec.user",
        "jsonPath: .status.phase",
        "jsonPath: .status.node",
        "status: {}",
        "self.spec.capacity.warm <= self.spec.capacity.max",
        "pool cannot change",
        "helm.sh/resource-policy: keep",
    ] {
        assert!(yaml.contains(needle), "CRDs lack {needle}");
    }
}
