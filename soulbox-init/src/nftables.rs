//! The nf_tables egress filter of a sandbox with `deny_out` entries.
//!
//! Policy routing rules act on the route lookup, and a socket that names
//! its output interface (`SO_BINDTODEVICE`, `IP_UNICAST_IF`, or
//! `IP_PKTINFO` with an interface index) gets past them. When the lookup
//! fails, the kernel takes the destination to be on that link. A filter on
//! the output hook gets every locally generated IPv4 packet whatever its
//! route, and a packet it drops makes `sendto` fail with EPERM.
//!
//! This module encodes the one nfnetlink batch that creates the table, its
//! chain and its rules, the same way `nft -f` would send them. The message
//! layouts and numbers come from <linux/netfilter/nf_tables.h> and
//! <linux/netfilter/nfnetlink.h>.

use soulbox_proto::Ipv4Cidr;

/// Name of the table, in the `ip` (IPv4) family.
pub const TABLE: &str = "soulbox";
/// Name of the base chain on the output hook.
const CHAIN: &str = "egress";

/// NFNL_SUBSYS_NFTABLES: the high byte of every nf_tables message type.
const SUBSYSTEM: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;

/// NFPROTO_IPV4, the family of the table.
const FAMILY_IPV4: u8 = 2;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;

/// NF_INET_LOCAL_OUT: packets that local sockets send.
const HOOK_LOCAL_OUT: u32 = 3;
/// NF_IP_PRI_FILTER, the priority of a `type filter` chain.
const PRIORITY_FILTER: u32 = 0;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;

/// NFT_REG_VERDICT and NFT_REG_1, a 16-byte data register.
const REGISTER_VERDICT: u32 = 0;
const REGISTER_1: u32 = 1;
/// NFT_META_OIF: the output interface's index.
const NFT_META_OIF: u32 = 5;
/// NFT_META_L4PROTO: the transport protocol's number, one byte.
const NFT_META_L4PROTO: u32 = 16;
/// NFTA_REJECT_TYPE, and NFT_REJECT_TCP_RST: reply with a TCP reset.
const NFTA_REJECT_TYPE: u16 = 1;
const NFT_REJECT_TCP_RST: u32 = 1;
/// NFT_PAYLOAD_NETWORK_HEADER, and where the IPv4 destination sits in it.
const PAYLOAD_NETWORK_HEADER: u32 = 1;
const IPV4_DESTINATION_OFFSET: u32 = 16;
const NFT_CMP_EQ: u32 = 0;
/// The loopback interface's index, the same in every network namespace
/// (LOOPBACK_IFINDEX in the kernel's <net/flow.h>).
const LOOPBACK_INDEX: u32 = 1;

/// A verdict of a rule or of the chain's policy.
#[derive(Clone, Copy)]
enum Verdict {
    Accept,
    Drop,
}

impl Verdict {
    fn code(self) -> u32 {
        match self {
            Verdict::Accept => NF_ACCEPT,
            Verdict::Drop => NF_DROP,
        }
    }
}

/// An nfnetlink batch being encoded: netlink messages back to back, each
/// with its own sequence number.
struct Batch {
    buf: Vec<u8>,
    sequence: u32,
}

/// Encodes the batch that creates table `ip soulbox` with one chain on the
/// output hook, whose rules match the routing rules in order:
///
/// 1. output interface `lo`: accept, so that loopback and the sandbox's own
///    addresses stay reachable;
/// 2. a destination in `blocked` (the metadata networks): drop, whatever
///    the allowed networks are;
/// 3. a destination in `allow_out`: accept;
/// 4. a destination in `deny_out`: drop;
/// 5. anything else: the chain's policy, accept.
///
/// Each network that rule 2 or 4 drops gets a rule before its drop that
/// rejects TCP with a reset (`reject with tcp reset`). A dropped SYN
/// would leave a connect from a socket bound to eth0 waiting until it
/// times out, while the local reset fails it at once with ECONNREFUSED.
/// A dropped datagram already fails its send with EPERM.
///
/// Only the last rule requests an acknowledgement (NLM_F_ACK), so that
/// hundreds of them cannot overflow the socket's receive buffer. The
/// kernel reports an error for any message of the batch without one, and
/// applies all the messages or none. Returns the batch and the sequence
/// number of that last rule.
///
/// The largest batch, 517 rules for 256 denied networks shorter than /32,
/// is 150 KB. [`crate::sys::Nfnetlink::send_batch`] raises
/// the socket's send buffer to fit it.
pub fn egress_batch(
    blocked: &[Ipv4Cidr],
    allow_out: &[Ipv4Cidr],
    deny_out: &[Ipv4Cidr],
) -> (Vec<u8>, u32) {
    let mut batch = Batch {
        buf: Vec::with_capacity(1024 + 256 * (allow_out.len() + deny_out.len())),
        sequence: 0,
    };
    batch.control(NFNL_MSG_BATCH_BEGIN);
    batch.new_table();
    batch.new_chain();

    let mut loopback = Vec::new();
    expression(&mut loopback, "meta", |data| {
        put_u32(data, 2, NFT_META_OIF);
        put_u32(data, 1, REGISTER_1);
    });
    compare_equal(&mut loopback, &LOOPBACK_INDEX.to_ne_bytes());
    verdict(&mut loopback, Verdict::Accept);
    let mut rules = vec![loopback];

    let networks = blocked
        .iter()
        .map(|network| (network, Verdict::Drop))
        .chain(allow_out.iter().map(|network| (network, Verdict::Accept)))
        .chain(deny_out.iter().map(|network| (network, Verdict::Drop)));
    for (network, action) in networks {
        if matches!(action, Verdict::Drop) {
            let mut reset = Vec::new();
            match_destination(&mut reset, network);
            expression(&mut reset, "meta", |data| {
                put_u32(data, 2, NFT_META_L4PROTO);
                put_u32(data, 1, REGISTER_1);
            });
            compare_equal(&mut reset, &[libc::IPPROTO_TCP as u8]);
            expression(&mut reset, "reject", |data| {
                put_u32(data, NFTA_REJECT_TYPE, NFT_REJECT_TCP_RST)
            });
            rules.push(reset);
        }
        let mut expressions = Vec::new();
        match_destination(&mut expressions, network);
        verdict(&mut expressions, action);
        rules.push(expressions);
    }

    let mut last = 0;
    for (i, expressions) in rules.iter().enumerate() {
        last = batch.new_rule(expressions, i + 1 == rules.len());
    }
    batch.control(NFNL_MSG_BATCH_END);
    (batch.buf, last)
}

impl Batch {
    /// Appends a netlink message header and struct nfgenmsg, and returns
    /// the message's start and sequence number. [`Batch::finish`] writes
    /// its length once the attributes follow.
    fn begin(&mut self, kind: u16, flags: u16, family: u8, resource: u16) -> (usize, u32) {
        self.sequence += 1;
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf
            .extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        self.buf.extend_from_slice(&self.sequence.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // struct nfgenmsg: family, NFNETLINK_V0, then res_id (big-endian).
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&resource.to_be_bytes());
        (start, self.sequence)
    }

    fn finish(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Appends NFNL_MSG_BATCH_BEGIN or NFNL_MSG_BATCH_END for nf_tables.
    fn control(&mut self, kind: u16) {
        let (start, _) = self.begin(kind, 0, libc::AF_UNSPEC as u8, SUBSYSTEM);
        self.finish(start);
    }

    fn nf_tables(&mut self, kind: u16, flags: u16) -> usize {
        let flags = flags | libc::NLM_F_CREATE as u16;
        self.begin(SUBSYSTEM << 8 | kind, flags, FAMILY_IPV4, 0).0
    }

    fn new_table(&mut self) {
        // NLM_F_EXCL: a table of that name would be one that PID 1 did
        // not make, so the create fails instead of adding to it.
        let start = self.nf_tables(NFT_MSG_NEWTABLE, libc::NLM_F_EXCL as u16);
        put_string(&mut self.buf, NFTA_TABLE_NAME, TABLE);
        self.finish(start);
    }

    fn new_chain(&mut self) {
        let start = self.nf_tables(NFT_MSG_NEWCHAIN, libc::NLM_F_EXCL as u16);
        put_string(&mut self.buf, NFTA_CHAIN_TABLE, TABLE);
        put_string(&mut self.buf, NFTA_CHAIN_NAME, CHAIN);
        put_nested(&mut self.buf, NFTA_CHAIN_HOOK, |hook| {
            put_u32(hook, NFTA_HOOK_HOOKNUM, HOOK_LOCAL_OUT);
            put_u32(hook, NFTA_HOOK_PRIORITY, PRIORITY_FILTER);
        });
        put_u32(&mut self.buf, NFTA_CHAIN_POLICY, Verdict::Accept.code());
        put_string(&mut self.buf, NFTA_CHAIN_TYPE, "filter");
        self.finish(start);
    }

    /// Appends a rule at the end of the chain (NLM_F_APPEND; without it
    /// the kernel inserts each rule first) and returns its sequence
    /// number.
    fn new_rule(&mut self, expressions: &[u8], acknowledge: bool) -> u32 {
        let mut flags = libc::NLM_F_APPEND as u16;
        if acknowledge {
            flags |= libc::NLM_F_ACK as u16;
        }
        let start = self.nf_tables(NFT_MSG_NEWRULE, flags);
        let sequence = self.sequence;
        put_string(&mut self.buf, NFTA_RULE_TABLE, TABLE);
        put_string(&mut self.buf, NFTA_RULE_CHAIN, CHAIN);
        put_nested(&mut self.buf, NFTA_RULE_EXPRESSIONS, |list| {
            list.extend_from_slice(expressions)
        });
        self.finish(start);
        sequence
    }
}

/// Appends the expressions that match an IPv4 destination in `network`.
/// For 0.0.0.0/0, which contains every destination, there are none. Else
/// they load the destination address, mask it for a prefix shorter than
/// 32 bits, and compare it with the network's address.
fn match_destination(expressions: &mut Vec<u8>, network: &Ipv4Cidr) {
    if network.prefix_len == 0 {
        return;
    }
    expression(expressions, "payload", |data| {
        put_u32(data, 1, REGISTER_1);
        put_u32(data, 2, PAYLOAD_NETWORK_HEADER);
        put_u32(data, 3, IPV4_DESTINATION_OFFSET);
        put_u32(data, 4, 4);
    });
    if network.prefix_len < 32 {
        let mask = u32::MAX << (32 - u32::from(network.prefix_len));
        // The bitwise expression computes (register & mask) ^ xor.
        expression(expressions, "bitwise", |data| {
            put_u32(data, 1, REGISTER_1);
            put_u32(data, 2, REGISTER_1);
            put_u32(data, 3, 4);
            put_nested(data, 4, |value| {
                put_attribute(value, NFTA_DATA_VALUE, &mask.to_be_bytes())
            });
            put_nested(data, 5, |value| {
                put_attribute(value, NFTA_DATA_VALUE, &[0; 4])
            });
        });
    }
    compare_equal(expressions, &network.address);
}

/// Appends a `cmp` expression that ends the rule unless register 1
/// contains `value`.
fn compare_equal(expressions: &mut Vec<u8>, value: &[u8]) {
    expression(expressions, "cmp", |data| {
        put_u32(data, 1, REGISTER_1);
        put_u32(data, 2, NFT_CMP_EQ);
        put_nested(data, 3, |data| put_attribute(data, NFTA_DATA_VALUE, value));
    });
}

/// Appends an `immediate` expression that sets the rule's verdict.
fn verdict(expressions: &mut Vec<u8>, verdict: Verdict) {
    expression(expressions, "immediate", |data| {
        put_u32(data, 1, REGISTER_VERDICT);
        put_nested(data, 2, |data| {
            put_nested(data, NFTA_DATA_VERDICT, |data| {
                put_u32(data, NFTA_VERDICT_CODE, verdict.code())
            })
        });
    });
}

/// Appends one element of a rule's expression list: the expression's
/// `name` and the attributes that `data` writes.
fn expression(expressions: &mut Vec<u8>, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
    put_nested(expressions, NFTA_LIST_ELEM, |element| {
        put_string(element, NFTA_EXPR_NAME, name);
        put_nested(element, NFTA_EXPR_DATA, data);
    });
}

/// Appends a netlink attribute (struct nlattr, then `value`, padded to 4
/// bytes).
fn put_attribute(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + (4 - len % 4) % 4, 0);
}

/// Appends a nested attribute whose contents `contents` writes.
fn put_nested(buf: &mut Vec<u8>, kind: u16, contents: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    contents(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
}

/// Appends a NUL-terminated string attribute.
fn put_string(buf: &mut Vec<u8>, kind: u16, value: &str) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(value.as_bytes());
    buf.push(0);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf[start + 2..start + 4].copy_from_slice(&kind.to_ne_bytes());
    buf.resize(buf.len() + (4 - len as usize % 4) % 4, 0);
}

/// Appends a 32-bit attribute in network byte order, as nf_tables reads
/// every integer attribute.
fn put_u32(buf: &mut Vec<u8>, kind: u16, value: u32) {
    put_attribute(buf, kind, &value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `batch` into its messages and returns each one's type,
    /// flags and sequence number.
    fn messages(batch: &[u8]) -> Vec<(u16, u16, u32)> {
        let mut found = Vec::new();
        let mut rest = batch;
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            assert!(len >= 20, "message length {len}");
            assert_eq!(len % 4, 0, "message length {len}");
            let kind = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
            let flags = u16::from_ne_bytes(rest[6..8].try_into().unwrap());
            let sequence = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
            found.push((kind, flags, sequence));
            rest = &rest[len..];
        }
        found
    }

    #[test]
    fn batch_acknowledges_last_rule_only() {
        let network = |address, prefix_len| Ipv4Cidr {
            address,
            prefix_len,
        };
        let blocked = [network([169, 254, 0, 0], 16)];
        let allow_out = [network([10, 0, 2, 2], 32), network([192, 0, 2, 0], 24)];
        let deny_out = [network([0, 0, 0, 0], 0)];
        let (batch, acknowledged) = egress_batch(&blocked, &allow_out, &deny_out);
        let found = messages(&batch);

        let rule = SUBSYSTEM << 8 | NFT_MSG_NEWRULE;
        let kinds: Vec<u16> = found.iter().map(|(kind, _, _)| *kind).collect();
        assert_eq!(
            kinds,
            [
                NFNL_MSG_BATCH_BEGIN,
                SUBSYSTEM << 8 | NFT_MSG_NEWTABLE,
                SUBSYSTEM << 8 | NFT_MSG_NEWCHAIN,
                // lo, then a reset and a drop for the blocked network,
                // the two allowed ones, and a reset and a drop for the
                // denied one.
                rule,
                rule,
                rule,
                rule,
                rule,
                rule,
                rule,
                NFNL_MSG_BATCH_END,
            ]
        );
        let ack = libc::NLM_F_ACK as u16;
        let asking: Vec<u32> = found
            .iter()
            .filter(|(_, flags, _)| flags & ack != 0)
            .map(|(_, _, sequence)| *sequence)
            .collect();
        assert_eq!(asking, [acknowledged]);
        assert_eq!(acknowledged, found[found.len() - 2].2);
        let append = libc::NLM_F_APPEND as u16;
        assert!(found
            .iter()
            .filter(|(kind, _, _)| *kind == rule)
            .all(|(_, flags, _)| flags & append != 0));
    }
}
