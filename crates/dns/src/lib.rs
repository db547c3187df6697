//! Service discovery's DNS responder: answers `SERVICE.local` and
//! `SERVICE.APP.local` (A, AAAA, and SRV `_http._tcp.NAME`) from an
//! immutable [`Records`] snapshot that the control plane builds and swaps
//! into a [`Zone`]. A query never reads the store nor waits on a controller.
//!
//! Answers:
//! - a known name: its address (A or AAAA), TTL [`Records::ttl`];
//! - `_http._tcp.NAME` of a known name: SRV `0 0 PORT NAME.`, with the
//!   name's addresses as additional records;
//! - a known name asked for another type: no answer (NOERROR, "no data");
//! - an unknown name under `local.`: NXDOMAIN;
//! - anything else: REFUSED (this is not a recursive resolver).
//!
//! It serves UDP and TCP on the same port, on a thread of its own.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;

/// The zone wharf answers for.
pub const ZONE: &str = "local";
/// The default time to live of answers: short, as tasks come and go (the
/// addresses themselves rarely change).
pub const DEFAULT_TTL: u32 = 5;
/// How long a TCP client may stay idle.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen for DNS on {addr} ({proto}): {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the DNS responder: {0}")]
    Start(#[source] std::io::Error),
}

/// Where a name points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// For SRV answers.
    pub port: u16,
}

/// One immutable snapshot of the names wharf answers.
#[derive(Debug, Clone)]
pub struct Records {
    /// Lower case, without the trailing dot: "api.local", "api.shop.local".
    names: HashMap<String, Target>,
    ttl: u32,
}

impl Default for Records {
    fn default() -> Self {
        Records { names: HashMap::new(), ttl: DEFAULT_TTL }
    }
}

impl Records {
    pub fn new(ttl: u32) -> Records {
        Records { names: HashMap::new(), ttl }
    }

    /// Adds (or replaces) `name`, e.g. "api.local"; case and a trailing dot
    /// don't matter.
    pub fn insert(&mut self, name: &str, target: Target) {
        self.names.insert(normalize(name), target);
    }

    pub fn get(&self, name: &str) -> Option<&Target> {
        self.names.get(&normalize(name))
    }

    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The answer to one question.
    pub fn resolve(&self, qname: &str, qtype: RecordType) -> Answer {
        let name = normalize(qname);
        let in_zone = name == ZONE || name.ends_with(&format!(".{ZONE}"));
        if !in_zone {
            return Answer::code(ResponseCode::Refused);
        }
        let mut out = Answer::code(ResponseCode::NoError);
        let owner = || Name::from_ascii(format!("{name}.")).ok();
        if let Some(t) = self.names.get(&name) {
            let Some(owner) = owner() else { return Answer::code(ResponseCode::FormErr) };
            if matches!(qtype, RecordType::A | RecordType::ANY) {
                out.answers.extend(t.v4.map(|ip| Record::from_rdata(owner.clone(), self.ttl, RData::A(A(ip)))));
            }
            if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
                out.answers.extend(t.v6.map(|ip| Record::from_rdata(owner.clone(), self.ttl, RData::AAAA(AAAA(ip)))));
            }
        } else if let Some((target_name, t)) =
            name.strip_prefix("_http._tcp.").and_then(|n| self.names.get(n).map(|t| (n, t)))
        {
            let (Some(owner), Ok(target)) = (owner(), Name::from_ascii(format!("{target_name}."))) else {
                return Answer::code(ResponseCode::FormErr);
            };
            if matches!(qtype, RecordType::SRV | RecordType::ANY) {
                let srv = SRV::new(0, 0, t.port, target.clone());
                out.answers.push(Record::from_rdata(owner, self.ttl, RData::SRV(srv)));
                out.additionals.extend(t.v4.map(|ip| Record::from_rdata(target.clone(), self.ttl, RData::A(A(ip)))));
                out.additionals
                    .extend(t.v6.map(|ip| Record::from_rdata(target.clone(), self.ttl, RData::AAAA(AAAA(ip)))));
            }
        } else if name != ZONE {
            out.code = ResponseCode::NXDomain;
        }
        if out.answers.is_empty() {
            // Negative answers carry the zone's SOA, whose minimum bounds how
            // long resolvers cache them.
            out.soa.extend(self.soa());
        }
        out
    }

    fn soa(&self) -> Option<Record> {
        let zone = Name::from_ascii(format!("{ZONE}.")).ok()?;
        let mname = Name::from_ascii(format!("wharf.{ZONE}.")).ok()?;
        let rname = Name::from_ascii(format!("hostmaster.wharf.{ZONE}.")).ok()?;
        let soa = SOA::new(mname, rname, 1, 60, 60, 600, self.ttl);
        Some(Record::from_rdata(zone, self.ttl, RData::SOA(soa)))
    }
}

/// What [`Records::resolve`] found.
#[derive(Debug, Clone)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The zone's SOA, on negative answers.
    pub soa: Vec<Record>,
}

impl Answer {
    fn code(code: ResponseCode) -> Answer {
        Answer { code, answers: Vec::new(), additionals: Vec::new(), soa: Vec::new() }
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The current snapshot; the control plane swaps whole [`Records`].
#[derive(Debug, Default)]
pub struct Zone {
    records: ArcSwap<Records>,
}

impl Zone {
    pub fn new() -> Arc<Zone> {
        Arc::new(Zone::default())
    }

    pub fn swap(&self, records: Records) {
        self.records.store(Arc::new(records));
    }

    pub fn load(&self) -> Arc<Records> {
        self.records.load_full()
    }
}

struct Handler {
    zone: Arc<Zone>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let header = request.header();
        let reply = if header.message_type() != MessageType::Query || header.op_code() != OpCode::Query {
            response.send_response(builder.error_msg(header, ResponseCode::NotImp)).await
        } else {
            match request.request_info() {
                Err(_) => response.send_response(builder.error_msg(header, ResponseCode::FormErr)).await,
                Ok(info) => {
                    let records = self.zone.load();
                    let answer = records.resolve(&info.query.name().to_string(), info.query.query_type());
                    let mut h = Header::response_from_request(header);
                    h.set_authoritative(answer.code != ResponseCode::Refused);
                    h.set_recursion_available(false);
                    h.set_response_code(answer.code);
                    let msg = builder.build(h, answer.answers.iter(), [], answer.soa.iter(), answer.additionals.iter());
                    response.send_response(msg).await
                }
            }
        };
        reply.unwrap_or_else(|e| {
            tracing::debug!("DNS answer not sent: {e}");
            let mut h = Header::new();
            h.set_response_code(ResponseCode::ServFail);
            h.into()
        })
    }
}

/// UDP and TCP on the same port. Port 0: a free UDP port whose TCP twin is
/// free too (a few tries, as the two are allotted apart).
fn bind(addr: SocketAddr) -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsError> {
    let tries = if addr.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp = std::net::UdpSocket::bind(addr).map_err(|source| DnsError::Bind { addr, proto: "udp", source })?;
        let at = udp.local_addr().map_err(DnsError::Start)?;
        match std::net::TcpListener::bind(at) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) => last = Some(DnsError::Bind { addr: at, proto: "tcp", source }),
        }
    }
    Err(last.expect("at least one try"))
}

/// A running responder: UDP and TCP on one address, on a thread of its own.
pub struct Responder {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    /// Binds UDP and TCP on `addr` (port 0: a free port, the same for both)
    /// and answers from `zone` until [`Responder::stop`].
    pub fn start(addr: SocketAddr, zone: Arc<Zone>) -> Result<Responder, DnsError> {
        let (udp, tcp) = bind(addr)?;
        let addr = udp.local_addr().map_err(DnsError::Start)?;
        udp.set_nonblocking(true).map_err(DnsError::Start)?;
        tcp.set_nonblocking(true).map_err(DnsError::Start)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(DnsError::Start)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wharf-dns".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut server = ServerFuture::new(Handler { zone });
                    match (tokio::net::UdpSocket::from_std(udp), tokio::net::TcpListener::from_std(tcp)) {
                        (Ok(udp), Ok(tcp)) => {
                            server.register_socket(udp);
                            server.register_listener(tcp, TCP_TIMEOUT);
                        }
                        (Err(e), _) | (_, Err(e)) => return tracing::error!("DNS sockets unusable: {e}"),
                    }
                    let _ = stop_rx.await;
                    let _ = server.shutdown_gracefully().await;
                })
            })
            .map_err(DnsError::Start)?;
        Ok(Responder { addr, stop: Some(stop_tx), thread: Some(thread) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering and waits for the thread to end.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.shut();
    }
}

#[cfg(test)]
mod tests;
