//! `shorthorn job …`: recurring snapshot, backup and snapshot-pruning jobs, through the
//! manager's API.

use anyhow::bail;
use clap::Subcommand;
use shorthorn_manager::api::CreateJob;
use shorthorn_manager::model::{JobTask, RecurringJob, RecurringJobSpec};

use super::api_client::{ApiArgs, Client};
use crate::daemon;
use crate::output::{json_name, line};

/// Recurring snapshot, backup and snapshot-pruning jobs.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Create a job; volumes run it once they select it (`volume jobs`, or
    /// `volume create --recurring-job`), by name or through one of its groups.
    Create {
        /// Name; also the `recurring-job` label of what it creates.
        name: String,
        /// snapshot; backup (a snapshot, then its backup to --target); snapshot-cleanup
        /// (remove the system snapshots and purge); snapshot-delete (keep the newest
        /// --retain user snapshots, remove older ones and purge).
        #[arg(long)]
        task: String,
        /// When, as cron in UTC: "MIN HOUR DOM MON DOW" (e.g. "0 */6 * * *"), or six
        /// fields with seconds first.
        #[arg(long)]
        cron: String,
        /// How many of its snapshots (and backups) to keep per volume; for
        /// snapshot-delete, how many user snapshots; snapshot-cleanup ignores it.
        #[arg(long, default_value_t = 5)]
        retain: u32,
        /// A group it belongs to; repeat for more.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Backup target (backup jobs): a backup target's name or a URL [default: the
        /// `default` backup target].
        #[arg(long)]
        target: Option<String>,
    },
    /// List jobs with their last and next run.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a job (what it created stays).
    Rm {
        /// The job.
        name: String,
    },
}

/// `shorthorn job …`.
pub fn job(api: &ApiArgs, command: JobCommand) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    daemon::runtime()?.block_on(async {
        use reqwest::Method;
        match command {
            JobCommand::Create {
                name,
                task,
                cron,
                retain,
                groups,
                target,
            } => {
                let Some((task, _)) = JobTask::ALL.into_iter().find(|(_, n)| *n == task) else {
                    let names: Vec<_> = JobTask::ALL.iter().map(|(_, n)| *n).collect();
                    bail!("--task {task:?}: use one of {}", names.join(", "));
                };
                let body = serde_json::to_value(CreateJob {
                    name,
                    spec: RecurringJobSpec {
                        task,
                        cron,
                        retain,
                        groups,
                        target,
                        labels: Default::default(),
                    },
                })?;
                let job: RecurringJob = client
                    .call(Method::POST, "/v1/recurring-jobs", Some(body))
                    .await?;
                line(format_args!("created job {}", job.name))
            }
            JobCommand::Ls { json } => {
                let jobs: Vec<RecurringJob> =
                    client.call(Method::GET, "/v1/recurring-jobs", None).await?;
                if json {
                    return line(format_args!("{}", serde_json::to_string_pretty(&jobs)?));
                }
                for j in jobs {
                    line(format_args!(
                        "{} {} cron={:?} retain={} groups=[{}] next={} last={} {}",
                        j.name,
                        json_name(&j.spec.task),
                        j.spec.cron,
                        j.spec.retain,
                        j.spec.groups.join(","),
                        j.status.next_run.as_deref().unwrap_or("-"),
                        j.status.last_run.as_deref().unwrap_or("-"),
                        j.status.last_result
                    ))?;
                }
                Ok(())
            }
            JobCommand::Rm { name } => {
                let _: serde_json::Value = client
                    .call(Method::DELETE, &format!("/v1/recurring-jobs/{name}"), None)
                    .await?;
                line(format_args!("removed job {name}"))
            }
        }
    })
}
