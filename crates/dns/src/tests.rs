use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};

use super::*;

fn records() -> Records {
    let mut r = Records::new(5);
    let api = Target { v4: Some(Ipv4Addr::new(127, 64, 0, 7)), v6: None, port: 8181 };
    r.insert("api.local", api);
    r.insert("API.Shop.local.", api);
    r.insert("v6.local", Target { v4: None, v6: Some(Ipv6Addr::LOCALHOST), port: 8181 });
    r
}

#[test]
fn known_names_answer_their_address_in_any_case() {
    let r = records();
    for name in ["api.local", "api.local.", "Api.LOCAL.", "api.shop.local."] {
        let a = r.resolve(name, RecordType::A);
        assert_eq!(a.code, ResponseCode::NoError, "{name}");
        assert_eq!(a.answers.len(), 1, "{name}");
        assert_eq!(a.answers[0].data(), &RData::A(A(Ipv4Addr::new(127, 64, 0, 7))));
        assert_eq!(a.answers[0].ttl(), 5);
    }
    let aaaa = r.resolve("v6.local.", RecordType::AAAA);
    assert_eq!(aaaa.answers[0].data(), &RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)));
}

#[test]
fn srv_points_at_the_name_and_port_with_the_address_as_additional() {
    let a = records().resolve("_http._tcp.api.local.", RecordType::SRV);
    assert_eq!(a.code, ResponseCode::NoError);
    let RData::SRV(srv) = a.answers[0].data() else { panic!("not an SRV: {:?}", a.answers) };
    assert_eq!(srv.port(), 8181);
    assert_eq!(srv.target().to_string(), "api.local.");
    assert_eq!(a.additionals.len(), 1);
}

#[test]
fn unknown_names_nxdomain_other_types_nodata_other_zones_refused() {
    let r = records();
    let nx = r.resolve("nope.local.", RecordType::A);
    assert_eq!(nx.code, ResponseCode::NXDomain);
    assert!(nx.answers.is_empty() && nx.soa.len() == 1, "a negative answer carries the SOA");
    assert_eq!(r.resolve("_http._tcp.nope.local.", RecordType::SRV).code, ResponseCode::NXDomain);
    let nodata = r.resolve("api.local.", RecordType::AAAA);
    assert_eq!((nodata.code, nodata.answers.len()), (ResponseCode::NoError, 0));
    assert_eq!(r.resolve("local.", RecordType::A).code, ResponseCode::NoError);
    assert_eq!(r.resolve("example.com.", RecordType::A).code, ResponseCode::Refused);
    assert_eq!(r.resolve("notlocal.", RecordType::A).code, ResponseCode::Refused);
}

fn ask(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut q = Message::new();
    q.set_id(4242).set_recursion_desired(true);
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    sock.send_to(&q.to_bytes().unwrap(), addr).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer over UDP");
    let m = Message::from_bytes(&buf[..n]).unwrap();
    assert_eq!(m.id(), 4242);
    m
}

#[test]
fn the_responder_answers_over_udp_from_the_swapped_snapshot() {
    let zone = Zone::new();
    let responder = Responder::start("127.0.0.1:0".parse().unwrap(), zone.clone()).unwrap();
    let addr = responder.local_addr();
    let m = ask(addr, "api.local.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NXDomain, "nothing known before the first snapshot");
    zone.swap(records());
    let m = ask(addr, "api.local.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative());
    assert_eq!(m.answers()[0].data(), &RData::A(A(Ipv4Addr::new(127, 64, 0, 7))));
    let m = ask(addr, "_http._tcp.api.shop.local.", RecordType::SRV);
    let RData::SRV(srv) = m.answers()[0].data() else { panic!("not an SRV") };
    assert_eq!(srv.port(), 8181);
    assert_eq!(ask(addr, "gone.local.", RecordType::A).response_code(), ResponseCode::NXDomain);
    assert_eq!(ask(addr, "example.com.", RecordType::A).response_code(), ResponseCode::Refused);
    responder.stop();
}

#[test]
fn the_responder_answers_over_tcp() {
    use std::io::{Read, Write};
    let zone = Zone::new();
    zone.swap(records());
    let responder = Responder::start("127.0.0.1:0".parse().unwrap(), zone).unwrap();
    let mut s = std::net::TcpStream::connect(responder.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut q = Message::new();
    q.set_id(7);
    q.add_query(Query::query(Name::from_ascii("api.local.").unwrap(), RecordType::A));
    let bytes = q.to_bytes().unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&bytes).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    let m = Message::from_bytes(&buf).unwrap();
    assert_eq!(m.answers().len(), 1);
}
