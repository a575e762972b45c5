//! Delivering halt, resume and reload to a running process: a control
//! request on `sb.ctl.<id>` (acked) or a Unix signal, as its manifest says.

use nix::sys::signal::Signal;
use serde_json::Value;
use switchboard_proto::api::{CtlOutcome, SupervisedState};
use switchboard_proto::{control_reply_subject, control_subject, Control, ControlAck, Verb};

use super::Actor;
use crate::files::write_secret;
use crate::manifest::Control as ControlMode;
use crate::supervisor::CONTROL_TIMEOUT;

impl Actor {
    /// Deliver halt/resume/reload to the process, by NATS or by signal.
    pub(super) async fn control(&mut self, verb: Verb, config: Option<Value>) -> CtlOutcome {
        match self.manifest.control {
            ControlMode::Signals => {
                let Some(proc) = self.proc.as_ref() else {
                    return self.outcome(false, Some("not running".into()), None);
                };
                match verb {
                    Verb::Halt => {
                        proc.signal_group(Signal::SIGSTOP);
                        self.set_state(SupervisedState::Halted, None).await;
                    }
                    Verb::Resume => {
                        proc.signal_group(Signal::SIGCONT);
                        self.set_state(SupervisedState::Running, None).await;
                    }
                    _ => {
                        if let Some(c) = &config {
                            let file = self.operator_dirs().config;
                            let written =
                                write_secret(&file, c.to_string().as_bytes()).and_then(|()| {
                                    match proc.run_as {
                                        // A new file: give it to the operator's user again.
                                        Some(crate::process::RunAs { uid, gid }) => {
                                            std::os::unix::fs::chown(&file, Some(uid), Some(gid))
                                        }
                                        None => Ok(()),
                                    }
                                });
                            if let Err(e) = written {
                                return self.outcome(
                                    false,
                                    Some(format!("cannot write {}: {e}", file.display())),
                                    None,
                                );
                            }
                        }
                        proc.signal_group(Signal::SIGHUP);
                    }
                }
                self.outcome(true, None, None)
            }
            ControlMode::Nats => {
                let request = match verb {
                    Verb::Halt => Control::Halt,
                    Verb::Resume => Control::Resume,
                    Verb::Restart => Control::Restart,
                    _ => Control::Reload {
                        config: config.unwrap_or(Value::Null),
                    },
                };
                // The ack comes on the operator's own subjects, not our
                // inbox: see `control_reply_subject`.
                let token = format!("{:016x}", fastrand::u64(..));
                let answer: Result<ControlAck, _> = self
                    .shared
                    .bus
                    .request_json_via(
                        &control_subject(&self.id),
                        &control_reply_subject(&self.id, &token),
                        &request,
                        CONTROL_TIMEOUT,
                    )
                    .await;
                match answer {
                    Ok(ack) => {
                        let next = match ack.state {
                            switchboard_proto::OperatorState::Halted => {
                                Some(SupervisedState::Halted)
                            }
                            switchboard_proto::OperatorState::Running => {
                                Some(SupervisedState::Running)
                            }
                            _ => None,
                        };
                        if let Some(s) = next {
                            if self.state != SupervisedState::Starting {
                                self.set_state(s, None).await;
                            }
                        }
                        match ack.error {
                            None if ack.ok => self.outcome(true, None, None),
                            Some(f) => self.outcome(false, Some(f.message), Some(f.code)),
                            None => self.outcome(false, Some("refused".into()), None),
                        }
                    }
                    Err(e) => self.outcome(false, Some(e.to_string()), None),
                }
            }
        }
    }
}
