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
//! interval sets, its chain and its rules, the same way `nft -f` would
//! send them. The message layouts and numbers come from
//! <linux/netfilter/nf_tables.h> and <linux/netfilter/nfnetlink.h>.

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
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;

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

const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_SET_ID: u16 = 4;

/// NFT_SET_CONSTANT: no element can be added or removed once a rule uses
/// the set.
const NFT_SET_CONSTANT: u32 = 0x2;
/// NFT_SET_INTERVAL: the set contains ranges, which the kernel stores in
/// its rbtree backend.
const NFT_SET_INTERVAL: u32 = 0x4;
/// NFT_SET_ELEM_INTERVAL_END: the element is the first key after a range.
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
/// The key type `ipv4_addr` (TYPE_IPADDR in nftables' datatype.h). The
/// kernel stores it for userspace only, and `nft list` uses it to print the
/// elements as addresses.
const KEY_TYPE_IPV4_ADDRESS: u32 = 7;

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
#[derive(Clone, Copy, PartialEq, Eq)]
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

/// Destination networks that the chain treats alike: the named interval
/// set that contains them, and the verdict of the rules that look it up.
struct Group<'a> {
    set: &'static str,
    /// NFTA_SET_ID, by which messages later in the batch name the set
    /// before the kernel has committed it.
    id: u32,
    networks: &'a [Ipv4Cidr],
    verdict: Verdict,
}

/// A range of IPv4 addresses as an interval set stores it: the first
/// address, and the first address after the range, which is `None` for a
/// range that runs to 255.255.255.255.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: u32,
    end: Option<u32>,
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
/// 2. a destination in set `blocked` (the metadata networks): drop,
///    whatever the allowed networks are;
/// 3. a destination in set `allowed` (`allow_out`): accept;
/// 4. a destination in set `denied` (`deny_out`): drop;
/// 5. anything else: the chain's policy, accept.
///
/// So the chain has at most six rules whatever the number of entries, and
/// the kernel matches a destination against each set in O(log n). Steps 2
/// and 4 each take two rules: the first rejects TCP with a reset (`reject
/// with tcp reset`), the second drops the rest. A dropped SYN would leave
/// a connect from a socket bound to eth0 waiting until it times out, while
/// the local reset fails it at once with ECONNREFUSED. A dropped datagram
/// already fails its send with EPERM. A group without networks gets
/// neither a set nor rules.
///
/// Only the last rule requests an acknowledgement (NLM_F_ACK). The kernel
/// reports an error for any message of the batch without one, and applies
/// all the messages or none. Returns the batch and the sequence number of
/// that last rule.
///
/// The largest batch, for the 512 networks that PID 1 accepts, none
/// touching another, is 22 KB.
/// [`crate::sys::Nfnetlink::send_batch`] raises the socket's send buffer
/// to fit it.
pub fn egress_batch(
    blocked: &[Ipv4Cidr],
    allow_out: &[Ipv4Cidr],
    deny_out: &[Ipv4Cidr],
) -> (Vec<u8>, u32) {
    let groups = [
        Group {
            set: "blocked",
            id: 1,
            networks: blocked,
            verdict: Verdict::Drop,
        },
        Group {
            set: "allowed",
            id: 2,
            networks: allow_out,
            verdict: Verdict::Accept,
        },
        Group {
            set: "denied",
            id: 3,
            networks: deny_out,
            verdict: Verdict::Drop,
        },
    ];
    let groups = groups.iter().filter(|group| !group.networks.is_empty());
    let networks = blocked.len() + allow_out.len() + deny_out.len();
    let mut batch = Batch {
        buf: Vec::with_capacity(2048 + 48 * networks),
        sequence: 0,
    };
    batch.control(NFNL_MSG_BATCH_BEGIN);
    batch.new_table();
    batch.new_chain();

    // A rule can name a set only after the set and its elements, because
    // the kernel rejects new elements of a constant set in use.
    for group in groups.clone() {
        batch.new_set(group);
        batch.new_set_elements(group, &merge_networks(group.networks));
    }

    let mut loopback = Vec::new();
    expression(&mut loopback, "meta", |data| {
        put_u32(data, 2, NFT_META_OIF);
        put_u32(data, 1, REGISTER_1);
    });
    compare_equal(&mut loopback, &LOOPBACK_INDEX.to_ne_bytes());
    verdict(&mut loopback, Verdict::Accept);
    let mut rules = vec![loopback];

    for group in groups {
        if group.verdict == Verdict::Drop {
            let mut reset = Vec::new();
            match_destination(&mut reset, group);
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
        match_destination(&mut expressions, group);
        verdict(&mut expressions, group.verdict);
        rules.push(expressions);
    }

    let mut last = 0;
    for (i, expressions) in rules.iter().enumerate() {
        last = batch.new_rule(expressions, i + 1 == rules.len());
    }
    batch.control(NFNL_MSG_BATCH_END);
    (batch.buf, last)
}

/// Merges `networks` into ranges sorted by address that neither overlap
/// nor touch.
///
/// The kernel's rbtree backend rejects a range that overlaps another one
/// of the set (EEXIST or ENOTEMPTY), while callers may give nested or
/// duplicate networks. Touching ranges are merged too, so that no range's
/// end has the key of the next range's start. The order is the one `nft`
/// sends, in which the range that runs to 255.255.255.255, the only one
/// without an end element, comes last.
fn merge_networks(networks: &[Ipv4Cidr]) -> Vec<Range> {
    // The end is the first address after the network, which is 2^32 for
    // a network that contains 255.255.255.255, so it takes 64 bits.
    let mut bounds: Vec<(u64, u64)> = networks
        .iter()
        .map(|network| {
            let start = u64::from(u32::from_be_bytes(network.address));
            let size = 1u64 << (32 - u32::from(network.prefix_len.min(32)));
            (start, start + size)
        })
        .collect();
    bounds.sort_unstable();

    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(bounds.len());
    for (start, end) in bounds {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
        .into_iter()
        .map(|(start, end)| Range {
            start: start as u32,
            end: u32::try_from(end).ok(),
        })
        .collect()
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

    /// Appends the creation of the named interval set of `group`, whose
    /// keys are IPv4 addresses.
    fn new_set(&mut self, group: &Group) {
        let start = self.nf_tables(NFT_MSG_NEWSET, libc::NLM_F_EXCL as u16);
        put_string(&mut self.buf, NFTA_SET_TABLE, TABLE);
        put_string(&mut self.buf, NFTA_SET_NAME, group.set);
        put_u32(
            &mut self.buf,
            NFTA_SET_FLAGS,
            NFT_SET_CONSTANT | NFT_SET_INTERVAL,
        );
        put_u32(&mut self.buf, NFTA_SET_KEY_TYPE, KEY_TYPE_IPV4_ADDRESS);
        put_u32(&mut self.buf, NFTA_SET_KEY_LEN, 4);
        put_u32(&mut self.buf, NFTA_SET_ID, group.id);
        self.finish(start);
    }

    /// Appends the elements of `ranges` to the set of `group`: each
    /// range's start, then the first address after it flagged
    /// NFT_SET_ELEM_INTERVAL_END. A range that runs to 255.255.255.255 has
    /// no such address and gets no end element, as `nft` sends it.
    ///
    /// All elements go in one attribute, whose length is 16 bits: 512
    /// ranges take 20 KB of it.
    ///
    /// NOTE: nft 1.0.6 also sends an end element for 0.0.0.0 before the
    /// first range, which the rbtree of Linux 6.18 does not need. Only
    /// Linux 6.18 has run the sets without it.
    fn new_set_elements(&mut self, group: &Group, ranges: &[Range]) {
        let start = self.nf_tables(NFT_MSG_NEWSETELEM, 0);
        put_string(&mut self.buf, NFTA_SET_ELEM_LIST_TABLE, TABLE);
        put_string(&mut self.buf, NFTA_SET_ELEM_LIST_SET, group.set);
        put_u32(&mut self.buf, NFTA_SET_ELEM_LIST_SET_ID, group.id);
        put_nested(&mut self.buf, NFTA_SET_ELEM_LIST_ELEMENTS, |elements| {
            for range in ranges {
                put_set_element(elements, range.start, false);
                if let Some(end) = range.end {
                    put_set_element(elements, end, true);
                }
            }
        });
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

/// Appends one element of an interval set: the address `key`, flagged as
/// the first address after a range when `interval_end` is set.
fn put_set_element(elements: &mut Vec<u8>, key: u32, interval_end: bool) {
    put_nested(elements, NFTA_LIST_ELEM, |element| {
        if interval_end {
            put_u32(element, NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
        }
        put_nested(element, NFTA_SET_ELEM_KEY, |value| {
            put_attribute(value, NFTA_DATA_VALUE, &key.to_be_bytes())
        });
    });
}

/// Appends the expressions that end the rule unless the IPv4 destination
/// is in the set of `group`: they load the destination address and look
/// it up in the set.
fn match_destination(expressions: &mut Vec<u8>, group: &Group) {
    expression(expressions, "payload", |data| {
        put_u32(data, 1, REGISTER_1);
        put_u32(data, 2, PAYLOAD_NETWORK_HEADER);
        put_u32(data, 3, IPV4_DESTINATION_OFFSET);
        put_u32(data, 4, 4);
    });
    expression(expressions, "lookup", |data| {
        put_string(data, NFTA_LOOKUP_SET, group.set);
        put_u32(data, NFTA_LOOKUP_SREG, REGISTER_1);
        put_u32(data, NFTA_LOOKUP_SET_ID, group.id);
    });
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

    fn network(address: [u8; 4], prefix_len: u8) -> Ipv4Cidr {
        Ipv4Cidr {
            address,
            prefix_len,
        }
    }

    /// One netlink message of a batch: its type, flags, sequence number
    /// and the attributes after struct nfgenmsg.
    struct Message<'a> {
        kind: u16,
        flags: u16,
        sequence: u32,
        attributes: &'a [u8],
    }

    /// Splits `batch` into its messages.
    fn messages(batch: &[u8]) -> Vec<Message<'_>> {
        let mut found = Vec::new();
        let mut rest = batch;
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            assert!(len >= 20, "message length {len}");
            assert_eq!(len % 4, 0, "message length {len}");
            assert!(len <= rest.len(), "message length {len}");
            found.push(Message {
                kind: u16::from_ne_bytes(rest[4..6].try_into().unwrap()),
                flags: u16::from_ne_bytes(rest[6..8].try_into().unwrap()),
                sequence: u32::from_ne_bytes(rest[8..12].try_into().unwrap()),
                attributes: &rest[20..len],
            });
            rest = &rest[len..];
        }
        found
    }

    /// Splits `buf` into netlink attributes and returns each one's type,
    /// without NLA_F_NESTED, and value.
    fn attributes(buf: &[u8]) -> Vec<(u16, &[u8])> {
        let mut found = Vec::new();
        let mut rest = buf;
        while !rest.is_empty() {
            let len = u16::from_ne_bytes(rest[0..2].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(rest[2..4].try_into().unwrap());
            assert!(len >= 4, "attribute length {len}");
            assert!(len <= rest.len(), "attribute length {len} past the end");
            found.push((kind & !NLA_F_NESTED, &rest[4..len]));
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
        found
    }

    /// Returns the value of the attribute of type `kind` in `buf`.
    fn attribute(buf: &[u8], kind: u16) -> &[u8] {
        attributes(buf)
            .into_iter()
            .find(|(found, _)| *found == kind)
            .unwrap_or_else(|| panic!("no attribute of type {kind}"))
            .1
    }

    fn string(value: &[u8]) -> &str {
        std::str::from_utf8(value.strip_suffix(b"\0").expect("NUL")).expect("UTF-8")
    }

    /// Returns the elements that the NEWSETELEM message for set `name`
    /// adds: each key as an address, and whether it is flagged
    /// NFT_SET_ELEM_INTERVAL_END.
    fn set_elements(batch: &[u8], name: &str) -> Vec<([u8; 4], bool)> {
        let found = messages(batch);
        let message = found
            .iter()
            .filter(|message| message.kind == SUBSYSTEM << 8 | NFT_MSG_NEWSETELEM)
            .find(|message| string(attribute(message.attributes, NFTA_SET_ELEM_LIST_SET)) == name)
            .unwrap_or_else(|| panic!("no elements for set {name}"));
        let elements = attribute(message.attributes, NFTA_SET_ELEM_LIST_ELEMENTS);
        attributes(elements)
            .into_iter()
            .map(|(kind, element)| {
                assert_eq!(kind, NFTA_LIST_ELEM);
                let key = attribute(attribute(element, NFTA_SET_ELEM_KEY), NFTA_DATA_VALUE);
                let end = attributes(element).iter().any(|(kind, flags)| {
                    *kind == NFTA_SET_ELEM_FLAGS
                        && u32::from_be_bytes((*flags).try_into().unwrap())
                            == NFT_SET_ELEM_INTERVAL_END
                });
                (key.try_into().unwrap(), end)
            })
            .collect()
    }

    fn range(start: [u8; 4], end: Option<[u8; 4]>) -> Range {
        Range {
            start: u32::from_be_bytes(start),
            end: end.map(u32::from_be_bytes),
        }
    }

    #[test]
    fn batch_acknowledges_last_rule_only() {
        let blocked = [network([169, 254, 0, 0], 16)];
        let allow_out = [network([10, 0, 2, 2], 32), network([192, 0, 2, 0], 24)];
        let deny_out = [network([0, 0, 0, 0], 0)];
        let (batch, acknowledged) = egress_batch(&blocked, &allow_out, &deny_out);
        let found = messages(&batch);

        let set = SUBSYSTEM << 8 | NFT_MSG_NEWSET;
        let elements = SUBSYSTEM << 8 | NFT_MSG_NEWSETELEM;
        let rule = SUBSYSTEM << 8 | NFT_MSG_NEWRULE;
        let kinds: Vec<u16> = found.iter().map(|message| message.kind).collect();
        assert_eq!(
            kinds,
            [
                NFNL_MSG_BATCH_BEGIN,
                SUBSYSTEM << 8 | NFT_MSG_NEWTABLE,
                SUBSYSTEM << 8 | NFT_MSG_NEWCHAIN,
                set,
                elements,
                set,
                elements,
                set,
                elements,
                // lo, a reset and a drop for the blocked set, an accept
                // for the allowed set, and a reset and a drop for the
                // denied set.
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
            .filter(|message| message.flags & ack != 0)
            .map(|message| message.sequence)
            .collect();
        assert_eq!(asking, [acknowledged]);
        assert_eq!(acknowledged, found[found.len() - 2].sequence);
        let append = libc::NLM_F_APPEND as u16;
        assert!(found
            .iter()
            .filter(|message| message.kind == rule)
            .all(|message| message.flags & append != 0));
    }

    /// Each set is created as a constant interval set of IPv4 addresses,
    /// and each rule after the loopback one looks up the set of its group
    /// by name and by the id that the set has in the batch.
    #[test]
    fn rules_look_up_sets_in_order() {
        let blocked = [network([169, 254, 0, 0], 16)];
        let allow_out = [network([10, 0, 2, 2], 32)];
        let deny_out = [network([198, 51, 100, 0], 24)];
        let (batch, _) = egress_batch(&blocked, &allow_out, &deny_out);
        let found = messages(&batch);

        let mut ids = Vec::new();
        for message in found
            .iter()
            .filter(|message| message.kind == SUBSYSTEM << 8 | NFT_MSG_NEWSET)
        {
            let name = string(attribute(message.attributes, NFTA_SET_NAME));
            let flags = attribute(message.attributes, NFTA_SET_FLAGS);
            assert_eq!(
                u32::from_be_bytes(flags.try_into().unwrap()),
                NFT_SET_CONSTANT | NFT_SET_INTERVAL,
                "flags of set {name}"
            );
            assert_eq!(
                attribute(message.attributes, NFTA_SET_KEY_LEN),
                4u32.to_be_bytes()
            );
            assert_eq!(
                attribute(message.attributes, NFTA_SET_KEY_TYPE),
                KEY_TYPE_IPV4_ADDRESS.to_be_bytes()
            );
            let id = attribute(message.attributes, NFTA_SET_ID);
            ids.push((name, u32::from_be_bytes(id.try_into().unwrap())));
        }
        assert_eq!(ids, [("blocked", 1), ("allowed", 2), ("denied", 3)]);

        let lookups: Vec<Option<(&str, u32)>> = found
            .iter()
            .filter(|message| message.kind == SUBSYSTEM << 8 | NFT_MSG_NEWRULE)
            .map(|message| {
                let expressions = attribute(message.attributes, NFTA_RULE_EXPRESSIONS);
                attributes(expressions)
                    .into_iter()
                    .map(|(_, element)| element)
                    .find(|element| string(attribute(element, NFTA_EXPR_NAME)) == "lookup")
                    .map(|element| {
                        let data = attribute(element, NFTA_EXPR_DATA);
                        let id = attribute(data, NFTA_LOOKUP_SET_ID);
                        (
                            string(attribute(data, NFTA_LOOKUP_SET)),
                            u32::from_be_bytes(id.try_into().unwrap()),
                        )
                    })
            })
            .collect();
        assert_eq!(
            lookups,
            [
                None,
                Some(("blocked", 1)),
                Some(("blocked", 1)),
                Some(("allowed", 2)),
                Some(("denied", 3)),
                Some(("denied", 3)),
            ]
        );
    }

    #[test]
    fn merge_sorts_and_joins_overlaps() {
        let merged = merge_networks(&[
            network([198, 51, 100, 0], 24),
            network([10, 0, 0, 0], 8),
            // Inside 10.0.0.0/8, and a duplicate of it.
            network([10, 1, 0, 0], 16),
            network([10, 0, 0, 0], 8),
            // Touches 10.0.0.0/8, which ends at 10.255.255.255.
            network([11, 0, 0, 0], 8),
            network([192, 0, 2, 7], 32),
            network([192, 0, 2, 7], 32),
        ]);
        assert_eq!(
            merged,
            [
                range([10, 0, 0, 0], Some([12, 0, 0, 0])),
                range([192, 0, 2, 7], Some([192, 0, 2, 8])),
                range([198, 51, 100, 0], Some([198, 51, 101, 0])),
            ]
        );
    }

    #[test]
    fn merge_keeps_adjacent_halves_whole() {
        let merged = merge_networks(&[network([192, 0, 2, 128], 25), network([192, 0, 2, 0], 25)]);
        assert_eq!(merged, [range([192, 0, 2, 0], Some([192, 0, 3, 0]))]);
    }

    /// A range that contains 255.255.255.255 has no first address after
    /// it, so it has no end.
    #[test]
    fn merge_leaves_top_range_open() {
        assert_eq!(
            merge_networks(&[network([0, 0, 0, 0], 0)]),
            [range([0, 0, 0, 0], None)]
        );
        assert_eq!(
            merge_networks(&[network([255, 255, 255, 255], 32)]),
            [range([255, 255, 255, 255], None)]
        );
        assert_eq!(
            merge_networks(&[network([240, 0, 0, 0], 4), network([192, 0, 2, 0], 24)]),
            [
                range([192, 0, 2, 0], Some([192, 0, 3, 0])),
                range([240, 0, 0, 0], None),
            ]
        );
        // 0.0.0.0/0 swallows every other network.
        assert_eq!(
            merge_networks(&[
                network([192, 0, 2, 0], 24),
                network([0, 0, 0, 0], 0),
                network([0, 0, 0, 0], 32),
            ]),
            [range([0, 0, 0, 0], None)]
        );
    }

    #[test]
    fn set_elements_in_interval_order() {
        let blocked = [
            network([169, 254, 0, 0], 16),
            network([100, 100, 100, 200], 32),
        ];
        let deny_out = [
            network([240, 0, 0, 0], 4),
            network([10, 1, 0, 0], 16),
            network([10, 0, 0, 0], 8),
            network([0, 0, 0, 0], 32),
        ];
        let (batch, _) = egress_batch(&blocked, &[], &deny_out);
        assert_eq!(
            set_elements(&batch, "blocked"),
            [
                ([100, 100, 100, 200], false),
                ([100, 100, 100, 201], true),
                ([169, 254, 0, 0], false),
                ([169, 255, 0, 0], true),
            ]
        );
        assert_eq!(
            set_elements(&batch, "denied"),
            [
                ([0, 0, 0, 0], false),
                ([0, 0, 0, 1], true),
                ([10, 0, 0, 0], false),
                ([11, 0, 0, 0], true),
                ([240, 0, 0, 0], false),
            ]
        );
        // No allow_out entry: no set and no accept rule.
        let sets = messages(&batch)
            .iter()
            .filter(|message| message.kind == SUBSYSTEM << 8 | NFT_MSG_NEWSET)
            .count();
        assert_eq!(sets, 2);
    }

    /// PID 1 accepts 512 networks, so the largest batch has 512 disjoint
    /// ranges in one set, 1,024 elements in a 16-bit attribute.
    #[test]
    fn largest_batch_keeps_six_rules() {
        let deny_out: Vec<Ipv4Cidr> = (0..soulbox_proto::MAX_EGRESS_RULES)
            .map(|i| network([198, 18, (i / 128) as u8, (i % 128 * 2) as u8], 32))
            .collect();
        let blocked = [network([169, 254, 0, 0], 16)];
        let allow_out = [network([10, 0, 2, 2], 32)];
        let (batch, _) = egress_batch(&blocked, &allow_out, &deny_out);
        assert!(batch.len() < 32 * 1024, "batch of {} bytes", batch.len());
        let rules = messages(&batch)
            .iter()
            .filter(|message| message.kind == SUBSYSTEM << 8 | NFT_MSG_NEWRULE)
            .count();
        assert_eq!(rules, 6);
        let elements = set_elements(&batch, "denied");
        assert_eq!(elements.len(), 2 * soulbox_proto::MAX_EGRESS_RULES);
        assert_eq!(elements[0], ([198, 18, 0, 0], false));
        assert_eq!(elements[1], ([198, 18, 0, 1], true));
        assert_eq!(elements[1023], ([198, 18, 3, 255], true));
    }

    /// Runs `body` on a thread of its own in a new network namespace,
    /// which ends with the thread. Returns false without root, where the
    /// namespace cannot be made, except under CI, which runs as root.
    fn in_new_network_namespace(body: impl FnOnce() + Send + 'static) -> bool {
        std::thread::spawn(move || {
            if let Err(error) = crate::sys::unshare(libc::CLONE_NEWNET) {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "unshare(CLONE_NEWNET): {error}; CI must run as root"
                );
                eprintln!("skipped: unshare(CLONE_NEWNET) failed with {error}; run as root");
                return false;
            }
            body();
            true
        })
        .join()
        .expect("the test thread panicked")
    }

    /// The kernel takes the largest batch, whose sets hold 512 ranges and
    /// a range without an end.
    #[test]
    fn kernel_accepts_largest_batch() {
        in_new_network_namespace(|| {
            let deny_out: Vec<Ipv4Cidr> = (0..soulbox_proto::MAX_EGRESS_RULES - 1)
                .map(|i| network([198, 18, (i / 128) as u8, (i % 128 * 2) as u8], 32))
                .chain([network([240, 0, 0, 0], 4)])
                .collect();
            let blocked = [network([169, 254, 0, 0], 16)];
            let allow_out = [network([10, 0, 2, 2], 32), network([0, 0, 0, 0], 0)];
            let (batch, acknowledged) = egress_batch(&blocked, &allow_out, &deny_out);
            let netlink = crate::sys::Nfnetlink::open().expect("open NETLINK_NETFILTER");
            netlink
                .send_batch(&batch, acknowledged)
                .expect("install the egress filter");
        });
    }

    /// The kernel rejects overlapping ranges, which is why PID 1 merges
    /// them, and the error survives a failed message of 20 KB, whose
    /// acknowledgement would not fit the reply buffer if it quoted it.
    #[test]
    fn kernel_error_for_overlap_reported() {
        in_new_network_namespace(|| {
            let group = Group {
                set: "denied",
                id: 3,
                networks: &[],
                verdict: Verdict::Drop,
            };
            let mut ranges: Vec<Range> = (0..511)
                .map(|i| {
                    let start = u32::from_be_bytes([198, 18, 0, 0]) + 2 * i;
                    Range {
                        start,
                        end: Some(start + 1),
                    }
                })
                .collect();
            ranges.push(range([198, 18, 0, 0], Some([198, 18, 0, 8])));

            let mut batch = Batch {
                buf: Vec::new(),
                sequence: 0,
            };
            batch.control(NFNL_MSG_BATCH_BEGIN);
            batch.new_table();
            batch.new_chain();
            batch.new_set(&group);
            batch.new_set_elements(&group, &ranges);
            let mut expressions = Vec::new();
            match_destination(&mut expressions, &group);
            verdict(&mut expressions, Verdict::Drop);
            let acknowledged = batch.new_rule(&expressions, true);
            batch.control(NFNL_MSG_BATCH_END);
            assert!(
                batch.buf.len() > 16 * 1024,
                "batch of {} bytes",
                batch.buf.len()
            );

            let netlink = crate::sys::Nfnetlink::open().expect("open NETLINK_NETFILTER");
            let error = netlink
                .send_batch(&batch.buf, acknowledged)
                .expect_err("the kernel took overlapping ranges");
            let errno = error.raw_os_error();
            assert!(
                errno == Some(libc::EEXIST) || errno == Some(libc::ENOTEMPTY),
                "expected EEXIST or ENOTEMPTY, got {error}"
            );
        });
    }
}
