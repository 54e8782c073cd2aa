//! What the configured principal may do: the operations the brokers authorize on each
//! topic and group (Kafka's "authorized operations", KIP-430), asked with librdkafka's
//! DescribeTopics and DescribeConsumerGroups. rdkafka has no safe wrapper for either,
//! hence the FFI here; every pointer read comes from the result event, which is
//! destroyed last.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char};
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;

/// One operation of Kafka's ACL model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Read,
    Write,
    Describe,
    DescribeConfigs,
}

impl Operation {
    /// The name `kafka-acls.sh --operation` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "Read",
            Self::Write => "Write",
            Self::Describe => "Describe",
            Self::DescribeConfigs => "DescribeConfigs",
        }
    }

    /// Whether `granted` (what the broker says the principal may do) covers `self`:
    /// `All` covers everything, and `Read`, `Write` (and their kin) imply `Describe`.
    pub fn covered_by(self, granted: &[rd::rd_kafka_AclOperation_t]) -> bool {
        use rd::rd_kafka_AclOperation_t as Op;
        granted.iter().any(|g| {
            matches!(
                (self, g),
                (_, Op::RD_KAFKA_ACL_OPERATION_ALL)
                    | (Self::Read, Op::RD_KAFKA_ACL_OPERATION_READ)
                    | (Self::Write, Op::RD_KAFKA_ACL_OPERATION_WRITE)
                    | (
                        Self::DescribeConfigs,
                        Op::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS
                            | Op::RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS
                    )
                    | (
                        Self::Describe,
                        Op::RD_KAFKA_ACL_OPERATION_DESCRIBE
                            | Op::RD_KAFKA_ACL_OPERATION_READ
                            | Op::RD_KAFKA_ACL_OPERATION_WRITE
                            | Op::RD_KAFKA_ACL_OPERATION_DELETE
                            | Op::RD_KAFKA_ACL_OPERATION_ALTER
                    )
            )
        })
    }
}

/// What the brokers said about one topic or group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// The operations the principal may perform.
    Granted(Vec<rd::rd_kafka_AclOperation_t>),
    /// The broker would not describe it: `unauthorized` when the principal lacks
    /// `Describe`, else (it does not exist, …) the broker's error.
    Refused { unauthorized: bool, detail: String },
}

impl Access {
    /// The operations of `needed` this access lacks. A broker that did not say (an
    /// empty list) lacks none that can be told.
    pub fn lacking(&self, needed: &[Operation]) -> Vec<Operation> {
        match self {
            Self::Granted(ops) if ops.is_empty() => Vec::new(),
            Self::Granted(ops) => needed
                .iter()
                .copied()
                .filter(|n| !n.covered_by(ops))
                .collect(),
            Self::Refused { .. } => needed.to_vec(),
        }
    }
}

/// Frees what librdkafka allocated, in reverse order, whatever the exit.
struct Request {
    queue: *mut rd::rd_kafka_queue_t,
    options: *mut rd::rd_kafka_AdminOptions_t,
    event: *mut rd::rd_kafka_event_t,
}

impl Drop for Request {
    fn drop(&mut self) {
        // SAFETY: each pointer is null or was returned by its librdkafka constructor
        // and is destroyed once, here.
        unsafe {
            if !self.event.is_null() {
                rd::rd_kafka_event_destroy(self.event);
            }
            if !self.options.is_null() {
                rd::rd_kafka_AdminOptions_destroy(self.options);
            }
            if !self.queue.is_null() {
                rd::rd_kafka_queue_destroy(self.queue);
            }
        }
    }
}

impl Request {
    fn new(
        admin: &AdminClient<DefaultClientContext>,
        op: rd::rd_kafka_admin_op_t,
        timeout: Duration,
    ) -> Result<Self, String> {
        let rk = admin.inner().native_ptr();
        // SAFETY: `rk` is the admin client's live handle; the options and queue are
        // owned by the returned `Request`.
        unsafe {
            let mut request = Self {
                queue: rd::rd_kafka_queue_new(rk),
                options: rd::rd_kafka_AdminOptions_new(rk, op),
                event: std::ptr::null_mut(),
            };
            if request.options.is_null() || request.queue.is_null() {
                return Err("librdkafka could not make an admin request".to_owned());
            }
            let error =
                rd::rd_kafka_AdminOptions_set_include_authorized_operations(request.options, 1);
            if !error.is_null() {
                let text = text(rd::rd_kafka_error_string(error));
                rd::rd_kafka_error_destroy(error);
                return Err(text);
            }
            let mut errstr = [0 as c_char; 256];
            let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
            rd::rd_kafka_AdminOptions_set_request_timeout(
                request.options,
                ms,
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            request.event = std::ptr::null_mut();
            Ok(request)
        }
    }

    /// Waits for the result event; an error if none came or it carries one.
    fn wait(&mut self, timeout: Duration) -> Result<(), String> {
        let ms = i32::try_from(timeout.as_millis().saturating_add(1000)).unwrap_or(i32::MAX);
        // SAFETY: the queue is live; the event is owned by `self` from here.
        unsafe {
            self.event = rd::rd_kafka_queue_poll(self.queue, ms);
            if self.event.is_null() {
                return Err(format!("no answer within {timeout:?}"));
            }
            if rd::rd_kafka_event_error(self.event)
                != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                return Err(text(rd::rd_kafka_event_error_string(self.event)));
            }
        }
        Ok(())
    }
}

/// # Safety
/// `p` is null or a NUL-terminated string that outlives the call.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: as the caller promises.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// # Safety
/// `ops` points to `n` operations (or is null with `n` 0), alive for the call.
unsafe fn operations(
    ops: *const rd::rd_kafka_AclOperation_t,
    n: usize,
) -> Vec<rd::rd_kafka_AclOperation_t> {
    if ops.is_null() || n == 0 {
        return Vec::new();
    }
    // SAFETY: as the caller promises.
    unsafe { std::slice::from_raw_parts(ops, n) }.to_vec()
}

fn c_names(names: &[&str]) -> Result<Vec<CString>, String> {
    names
        .iter()
        .map(|n| CString::new(*n).map_err(|_| format!("{n:?} holds a NUL byte")))
        .collect()
}

/// The principal's access to each topic.
pub fn topics(
    admin: &AdminClient<DefaultClientContext>,
    names: &[&str],
    timeout: Duration,
) -> Result<BTreeMap<String, Access>, String> {
    let owned = c_names(names)?;
    let mut ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
    let mut request = Request::new(
        admin,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        timeout,
    )?;
    // SAFETY: the names outlive the collection, which is destroyed before return;
    // the result's descriptions live as long as `request.event`.
    unsafe {
        let collection = rd::rd_kafka_TopicCollection_of_topic_names(ptrs.as_mut_ptr(), ptrs.len());
        rd::rd_kafka_DescribeTopics(
            admin.inner().native_ptr(),
            collection,
            request.options,
            request.queue,
        );
        rd::rd_kafka_TopicCollection_destroy(collection);
        request.wait(timeout)?;
        let result = rd::rd_kafka_event_DescribeTopics_result(request.event);
        if result.is_null() {
            return Err("not a DescribeTopics result".to_owned());
        }
        let mut n = 0usize;
        let descs = rd::rd_kafka_DescribeTopics_result_topics(result, &mut n);
        let mut out = BTreeMap::new();
        for i in 0..n {
            let d = *descs.add(i);
            let name = text(rd::rd_kafka_TopicDescription_name(d));
            let error = rd::rd_kafka_TopicDescription_error(d);
            let access = if !error.is_null()
                && rd::rd_kafka_error_code(error)
                    != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                Access::Refused {
                    unauthorized: rd::rd_kafka_error_code(error)
                        == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
                    detail: text(rd::rd_kafka_error_string(error)),
                }
            } else {
                let mut m = 0usize;
                let ops = rd::rd_kafka_TopicDescription_authorized_operations(d, &mut m);
                Access::Granted(operations(ops, m))
            };
            out.insert(name, access);
        }
        Ok(out)
    }
}

/// The principal's access to each consumer group (a group that does not exist yet is
/// described as empty, with the operations the principal would have on it).
pub fn groups(
    admin: &AdminClient<DefaultClientContext>,
    names: &[&str],
    timeout: Duration,
) -> Result<BTreeMap<String, Access>, String> {
    let owned = c_names(names)?;
    let mut ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
    let mut request = Request::new(
        admin,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
        timeout,
    )?;
    // SAFETY: the names outlive the call; the result's descriptions live as long as
    // `request.event`.
    unsafe {
        rd::rd_kafka_DescribeConsumerGroups(
            admin.inner().native_ptr(),
            ptrs.as_mut_ptr(),
            ptrs.len(),
            request.options,
            request.queue,
        );
        request.wait(timeout)?;
        let result = rd::rd_kafka_event_DescribeConsumerGroups_result(request.event);
        if result.is_null() {
            return Err("not a DescribeConsumerGroups result".to_owned());
        }
        let mut n = 0usize;
        let descs = rd::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut n);
        let mut out = BTreeMap::new();
        for i in 0..n {
            let d = *descs.add(i);
            let name = text(rd::rd_kafka_ConsumerGroupDescription_group_id(d));
            let error = rd::rd_kafka_ConsumerGroupDescription_error(d);
            let access = if !error.is_null()
                && rd::rd_kafka_error_code(error)
                    != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                Access::Refused {
                    unauthorized: rd::rd_kafka_error_code(error)
                        == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED,
                    detail: text(rd::rd_kafka_error_string(error)),
                }
            } else {
                let mut m = 0usize;
                let ops = rd::rd_kafka_ConsumerGroupDescription_authorized_operations(d, &mut m);
                Access::Granted(operations(ops, m))
            };
            out.insert(name, access);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rd::rd_kafka_AclOperation_t as Op;

    #[test]
    fn implied_operations_count_as_granted() {
        let read = [Op::RD_KAFKA_ACL_OPERATION_READ];
        assert!(Operation::Read.covered_by(&read));
        assert!(Operation::Describe.covered_by(&read));
        assert!(!Operation::Write.covered_by(&read));
        assert!(Operation::Write.covered_by(&[Op::RD_KAFKA_ACL_OPERATION_ALL]));
        let access = Access::Granted(vec![Op::RD_KAFKA_ACL_OPERATION_WRITE]);
        assert_eq!(
            access.lacking(&[Operation::Write, Operation::DescribeConfigs]),
            vec![Operation::DescribeConfigs]
        );
        assert_eq!(
            Access::Refused {
                unauthorized: true,
                detail: "no".into()
            }
            .lacking(&[Operation::Read]),
            vec![Operation::Read]
        );
    }
}
