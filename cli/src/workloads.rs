//! `punnet get` tables for DaemonSets and Jobs, with kubectl's columns: `NAME DESIRED
//! CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE` and `NAME COMPLETIONS
//! DURATION AGE` (+ `CONTAINERS IMAGES SELECTOR` with `-o wide`). Pure functions of the
//! typed objects.

use chrono::{DateTime, Utc};
use punnet_api::{DaemonSet, Job, PodSpec};

use crate::age::{age, human_duration};
use crate::labels::selector_string;
use crate::table::Table;

fn headers(show_namespace: bool, names: &[&str]) -> Vec<String> {
    let mut h: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    if show_namespace {
        h.insert(0, "NAMESPACE".into());
    }
    h
}

fn with_namespace(show: bool, namespace: &str, mut row: Vec<String>) -> Vec<String> {
    if show {
        row.insert(0, namespace.to_string());
    }
    row
}

fn containers_and_images(spec: &PodSpec) -> [String; 2] {
    let join = |f: fn(&punnet_api::Container) -> &str| {
        spec.containers.iter().map(f).collect::<Vec<_>>().join(",")
    };
    [join(|c| c.name.as_str()), join(|c| c.image.as_str())]
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}

pub fn daemon_set_table(
    sets: &[DaemonSet],
    wide: bool,
    show_namespace: bool,
    now: DateTime<Utc>,
) -> Table {
    let mut cols = vec![
        "NAME",
        "DESIRED",
        "CURRENT",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "NODE SELECTOR",
        "AGE",
    ];
    if wide {
        cols.extend(["CONTAINERS", "IMAGES", "SELECTOR"]);
    }
    let mut table = Table::new(&headers(show_namespace, &cols));
    for d in sets {
        let s = &d.status;
        let node_selector = d
            .spec
            .template
            .spec
            .node_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut row = vec![
            d.metadata.name.clone(),
            s.desired_number_scheduled.to_string(),
            s.current_number_scheduled.to_string(),
            s.number_ready.to_string(),
            s.updated_number_scheduled.to_string(),
            s.number_available.to_string(),
            or_none(node_selector),
            age(d.metadata.creation_timestamp.as_ref(), now),
        ];
        if wide {
            row.extend(containers_and_images(&d.spec.template.spec));
            row.push(or_none(selector_string(&d.spec.selector)));
        }
        table.push(with_namespace(
            show_namespace,
            d.metadata.namespace_or_default(),
            row,
        ));
    }
    table
}

/// `2/3` succeeded of completions; a work queue (no completions) shows `1/1 of 3`
/// style as kubectl: succeeded over parallelism.
pub fn job_completions(j: &Job) -> String {
    match j.spec.completions() {
        Some(n) => format!("{}/{n}", j.status.succeeded),
        None => format!("{}/1 of {}", j.status.succeeded, j.spec.parallelism()),
    }
}

/// From the start to the completion (or to now while it runs); empty before it starts.
pub fn job_duration(j: &Job, now: DateTime<Utc>) -> String {
    let Some(start) = j.status.start_time else {
        return String::new();
    };
    let end = j.status.completion_time.map(|t| t.0).unwrap_or(now);
    human_duration((end - start.0).num_seconds())
}

pub fn job_table(jobs: &[Job], wide: bool, show_namespace: bool, now: DateTime<Utc>) -> Table {
    let mut cols = vec!["NAME", "COMPLETIONS", "DURATION", "AGE"];
    if wide {
        cols.extend(["CONTAINERS", "IMAGES", "SELECTOR"]);
    }
    let mut table = Table::new(&headers(show_namespace, &cols));
    for j in jobs {
        let mut row = vec![
            j.metadata.name.clone(),
            job_completions(j),
            job_duration(j, now),
            age(j.metadata.creation_timestamp.as_ref(), now),
        ];
        if wide {
            row.extend(containers_and_images(&j.spec.template.spec));
            let uid = j.metadata.uid.clone().unwrap_or_default();
            row.push(format!("batch.kubernetes.io/controller-uid={uid}"));
        }
        table.push(with_namespace(
            show_namespace,
            j.metadata.namespace_or_default(),
            row,
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use punnet_api::Time;

    fn at(s: i64) -> Time {
        Time(Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap())
    }

    #[test]
    fn daemon_set_columns() {
        let mut d = DaemonSet::default();
        d.metadata.name = "exporter".into();
        d.metadata.creation_timestamp = Some(at(0));
        d.spec
            .template
            .spec
            .node_selector
            .insert("kubernetes.io/arch".into(), "arm64".into());
        d.status.desired_number_scheduled = 3;
        d.status.current_number_scheduled = 3;
        d.status.number_ready = 2;
        d.status.updated_number_scheduled = 1;
        d.status.number_available = 2;
        let text = daemon_set_table(&[d], false, false, at(300).0).render();
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| {
                l.split("  ")
                    .filter(|s| !s.is_empty())
                    .map(str::trim)
                    .collect()
            })
            .collect();
        assert_eq!(
            lines[0],
            [
                "NAME",
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "NODE SELECTOR",
                "AGE"
            ]
        );
        assert_eq!(
            lines[1],
            [
                "exporter",
                "3",
                "3",
                "2",
                "1",
                "2",
                "kubernetes.io/arch=arm64",
                "5m"
            ]
        );
    }

    #[test]
    fn job_columns() {
        let mut j = Job::default();
        j.metadata.name = "flash".into();
        j.metadata.creation_timestamp = Some(at(0));
        j.spec.completions = Some(3);
        j.status.succeeded = 2;
        j.status.start_time = Some(at(1));
        let text = job_table(std::slice::from_ref(&j), false, false, at(46).0).render();
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row, ["flash", "2/3", "45s", "46s"]);
        j.status.completion_time = Some(at(11));
        assert_eq!(job_duration(&j, at(1000).0), "10s");
        j.spec.completions = None;
        j.spec.parallelism = Some(4);
        assert_eq!(job_completions(&j), "2/1 of 4");
    }
}
