//! Offloads done in software, on plain Ethernet frame bytes: completing a `CHECKSUM_PARTIAL`
//! TCP/UDP checksum, cutting a TCP super-frame (GSO/GRO) into MTU-sized segments, and the
//! reverse operations a test device uses to emulate an offloading peer (leave a checksum partial,
//! coalesce segments the way GRO does).
//!
//! Only untagged Ethernet with IPv4 (any IHL) or IPv6 (no extension headers) is understood;
//! anything else is left alone (the caller passes it on unchanged).

/// Where the IP and L4 parts of a frame are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4 {
    pub ipv6: bool,
    /// Offset of the L4 header (TCP/UDP) from the frame's first byte.
    pub off: usize,
    /// IP protocol / next header.
    pub proto: u8,
    /// End of the IP packet (frames may carry Ethernet padding after it).
    pub end: usize,
}

const ETH: usize = 14;

/// Parses the IP header of `f`. `None` for non-IP, fragments, truncated frames.
pub fn l4(f: &[u8]) -> Option<L4> {
    let ethertype = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    match ethertype {
        0x0800 => {
            let ihl = usize::from(f.get(ETH)? & 0x0f) * 4;
            let tot = usize::from(u16::from_be_bytes([*f.get(ETH + 2)?, *f.get(ETH + 3)?]));
            let frag = u16::from_be_bytes([*f.get(ETH + 6)?, *f.get(ETH + 7)?]) & 0x3fff;
            if ihl < 20 || frag != 0 || tot < ihl || ETH + tot > f.len() {
                return None;
            }
            Some(L4 {
                ipv6: false,
                off: ETH + ihl,
                proto: f[ETH + 9],
                end: ETH + tot,
            })
        }
        0x86dd => {
            let plen = usize::from(u16::from_be_bytes([*f.get(ETH + 4)?, *f.get(ETH + 5)?]));
            if ETH + 40 + plen > f.len() {
                return None;
            }
            Some(L4 {
                ipv6: true,
                off: ETH + 40,
                proto: f[ETH + 6],
                end: ETH + 40 + plen,
            })
        }
        _ => None,
    }
}

/// One's-complement sum of `b` (big-endian 16-bit words, odd byte padded) added to `sum`.
pub fn sum_bytes(mut sum: u32, b: &[u8]) -> u32 {
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        if sum > 0xffff_0000 {
            sum = fold32(sum);
        }
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    fold32(sum)
}

fn fold32(mut sum: u32) -> u32 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// Folded one's-complement sum of the pseudo-header of `f`'s L4 part; `len` is the L4 length to
/// put in it (`None`: leave the length out, as DPDK's TSO wants).
pub fn pseudo_sum(f: &[u8], p: &L4, len: Option<usize>) -> u16 {
    let mut s = if p.ipv6 {
        sum_bytes(0, &f[ETH + 8..ETH + 40])
    } else {
        sum_bytes(0, &f[ETH + 12..ETH + 20])
    };
    s = sum_bytes(s, &[0, p.proto]);
    if let Some(l) = len {
        s = sum_bytes(s, &(l as u32).to_be_bytes());
    }
    fold32(s) as u16
}

/// Offset of the checksum field inside the L4 header, for TCP and UDP.
pub fn csum_field(proto: u8) -> Option<usize> {
    match proto {
        6 => Some(16),
        17 => Some(6),
        _ => None,
    }
}

/// Writes the full TCP/UDP checksum of `f` (whatever the field held). False when `f` is not a
/// TCP/UDP IP frame (then it is untouched).
pub fn fill_l4_csum(f: &mut [u8]) -> bool {
    let Some(p) = l4(f) else { return false };
    let Some(field) = csum_field(p.proto) else {
        return false;
    };
    let at = p.off + field;
    if at + 2 > p.end {
        return false;
    }
    f[at..at + 2].fill(0);
    let s = sum_bytes(
        u32::from(pseudo_sum(f, &p, Some(p.end - p.off))),
        &f[p.off..p.end],
    );
    let mut c = !(s as u16);
    if p.proto == 17 && c == 0 {
        c = 0xffff;
    }
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Turns a complete TCP/UDP checksum into what a `CHECKSUM_PARTIAL` sender leaves: the pseudo-
/// header sum, not complemented. Returns `(csum_start, csum_offset)` as in `TxMeta::csum`.
pub fn make_partial(f: &mut [u8]) -> Option<(u16, u16)> {
    let p = l4(f)?;
    let field = csum_field(p.proto)?;
    let at = p.off + field;
    if at + 2 > p.end {
        return None;
    }
    let ps = pseudo_sum(f, &p, Some(p.end - p.off));
    f[at..at + 2].copy_from_slice(&ps.to_be_bytes());
    Some((p.off as u16, field as u16))
}

/// The IPv4 header checksum, rewritten.
fn fill_ipv4_csum(f: &mut [u8]) {
    let ihl = usize::from(f[ETH] & 0x0f) * 4;
    f[ETH + 10..ETH + 12].fill(0);
    let c = !(sum_bytes(0, &f[ETH..ETH + ihl]) as u16);
    f[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
}

/// A TCP frame's header layout: `(l4, tcp header length)`.
fn tcp_parts(f: &[u8]) -> Option<(L4, usize)> {
    let p = l4(f)?;
    if p.proto != 6 {
        return None;
    }
    let thl = usize::from(*f.get(p.off + 12)? >> 4) * 4;
    if thl < 20 || p.off + thl > p.end {
        return None;
    }
    Some((p, thl))
}

/// Cuts TCP super-frame `f` into segments of at most `mss` payload bytes, as a NIC's TSO would:
/// each segment gets the headers with its own IP length (IPv4: ID + i, header checksum), TCP
/// sequence number, FIN/PSH only on the last, CWR only on the first, and a full TCP checksum.
/// `emit` receives each segment (a scratch buffer reused between calls). Returns the number of
/// segments, or `None` when `f` is not a TCP IP frame (nothing emitted).
pub fn segment_tcp(f: &[u8], mss: usize, emit: &mut dyn FnMut(&[u8])) -> Option<usize> {
    let (p, thl) = tcp_parts(f)?;
    let hdr = p.off + thl;
    let payload = &f[hdr..p.end];
    let mss = mss.max(1);
    if payload.len() <= mss {
        let mut one = f[..p.end].to_vec();
        fill_l4_csum(&mut one);
        emit(&one);
        return Some(1);
    }
    let seq0 = u32::from_be_bytes([f[p.off + 4], f[p.off + 5], f[p.off + 6], f[p.off + 7]]);
    let id0 = u16::from_be_bytes([f[ETH + 4], f[ETH + 5]]);
    let flags0 = f[p.off + 13];
    let mut seg = Vec::with_capacity(hdr + mss);
    let n = payload.len().div_ceil(mss);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        seg.clear();
        seg.extend_from_slice(&f[..hdr]);
        seg.extend_from_slice(chunk);
        if p.ipv6 {
            let plen = (seg.len() - ETH - 40) as u16;
            seg[ETH + 4..ETH + 6].copy_from_slice(&plen.to_be_bytes());
        } else {
            let tot = (seg.len() - ETH) as u16;
            seg[ETH + 2..ETH + 4].copy_from_slice(&tot.to_be_bytes());
            // A DF segment train may keep one ID; counting up is what Linux's GSO does.
            seg[ETH + 4..ETH + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            fill_ipv4_csum(&mut seg);
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        seg[p.off + 4..p.off + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 < n {
            flags &= !(0x01 | 0x08); // FIN, PSH: last segment only
        }
        if i > 0 {
            flags &= !0x80; // CWR: first segment only
        }
        seg[p.off + 13] = flags;
        fill_l4_csum(&mut seg);
        emit(&seg);
    }
    Some(n)
}

/// GRO as a receiving kernel does it, for test devices: appends TCP segment `f` to super-frame
/// `into` when it continues it (same headers apart from IP length/ID/checksum and TCP sequence,
/// checksum and PSH; contiguous sequence; plain ACK segments with payload; result at most
/// `max_len` bytes). The super-frame's checksum is left stale: the receiver gets it as
/// `CHECKSUM_PARTIAL` (call [`make_partial`] after the last merge).
pub fn gro_merge(into: &mut Vec<u8>, f: &[u8], max_len: usize) -> bool {
    let (Some((pa, ta)), Some((pb, tb))) = (tcp_parts(into), tcp_parts(f)) else {
        return false;
    };
    if pa.ipv6 != pb.ipv6 || pa.off != pb.off || ta != tb || into.len() != pa.end {
        return false;
    }
    let (ha, hb) = (pa.off + ta, pb.off + tb);
    let (la, lb) = (pa.end - ha, pb.end - hb);
    if la == 0 || lb == 0 || lb > la || pa.end + lb > max_len {
        return false;
    }
    // Only ACK (and PSH on the merged-in segment, which becomes the super-frame's).
    if into[pa.off + 13] & !0x10 != 0 || f[pb.off + 13] & !0x18 != 0 {
        return false;
    }
    let ip_same = if pa.ipv6 {
        into[ETH..ETH + 4] == f[ETH..ETH + 4] && into[ETH + 6..ETH + 40] == f[ETH + 6..ETH + 40]
    } else {
        into[ETH..ETH + 2] == f[ETH..ETH + 2]
            && into[ETH + 6..ETH + 10] == f[ETH + 6..ETH + 10]
            && into[ETH + 12..pa.off] == f[ETH + 12..pb.off]
    };
    let seq = |b: &[u8], o: usize| u32::from_be_bytes([b[o + 4], b[o + 5], b[o + 6], b[o + 7]]);
    if into[..ETH] != f[..ETH]
        || !ip_same
        || into[pa.off..pa.off + 4] != f[pb.off..pb.off + 4]
        || into[pa.off + 8..pa.off + 13] != f[pb.off + 8..pb.off + 13]
        || into[pa.off + 14..pa.off + 16] != f[pb.off + 14..pb.off + 16]
        || into[pa.off + 18..ha] != f[pb.off + 18..hb]
        || seq(into, pa.off).wrapping_add(la as u32) != seq(f, pb.off)
    {
        return false;
    }
    into.extend_from_slice(&f[hb..pb.end]);
    into[pa.off + 13] = f[pb.off + 13];
    if pa.ipv6 {
        let plen = (into.len() - ETH - 40) as u16;
        into[ETH + 4..ETH + 6].copy_from_slice(&plen.to_be_bytes());
    } else {
        let tot = (into.len() - ETH) as u16;
        into[ETH + 2..ETH + 4].copy_from_slice(&tot.to_be_bytes());
        fill_ipv4_csum(into);
    }
    true
}

/// TCP payload bytes of the first segment of a super-frame: what `gso_size` reports.
pub fn tcp_payload_len(f: &[u8]) -> Option<usize> {
    let (p, thl) = tcp_parts(f)?;
    Some(p.end - p.off - thl)
}

/// `hdr_len` for a virtio_net_hdr: Ethernet + IP + TCP header bytes.
pub fn tcp_header_end(f: &[u8]) -> Option<usize> {
    let (p, thl) = tcp_parts(f)?;
    Some(p.off + thl)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An IPv4 TCP frame 10.0.0.1:1000 -> 10.0.0.2:80 with `payload`, sequence `seq`, flags, a
    /// timestamp option, and complete checksums.
    pub fn tcp4(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 32];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 6] = 0x40;
        f[14 + 8] = 64;
        f[14 + 9] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&1000u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        f[42..46].copy_from_slice(&7u32.to_be_bytes());
        f[46] = 8 << 4;
        f[47] = flags;
        f[48..50].copy_from_slice(&512u16.to_be_bytes());
        f[54..66].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        f.extend_from_slice(payload);
        let tot = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&tot.to_be_bytes());
        fill_ipv4_csum(&mut f);
        fill_l4_csum(&mut f);
        f
    }

    fn tcp_ok(f: &[u8]) -> bool {
        let p = l4(f).unwrap();
        sum_bytes(
            u32::from(pseudo_sum(f, &p, Some(p.end - p.off))),
            &f[p.off..p.end],
        ) == 0xffff
    }

    fn ip_ok(f: &[u8]) -> bool {
        sum_bytes(0, &f[14..34]) == 0xffff
    }

    #[test]
    fn partial_then_completed_equals_original() {
        let f = tcp4(100, 0x18, b"hello, world!");
        let mut g = f.clone();
        assert_eq!(make_partial(&mut g), Some((34, 16)));
        assert_ne!(f, g);
        assert!(fill_l4_csum(&mut g));
        assert_eq!(f, g);
        assert!(!fill_l4_csum(&mut [0u8; 20]));
    }

    #[test]
    fn gro_then_segment_round_trips() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let segs: Vec<Vec<u8>> = data
            .chunks(1000)
            .enumerate()
            .map(|(i, c)| {
                let last = i == 4;
                tcp4(5000 + (i as u32) * 1000, if last { 0x19 } else { 0x10 }, c)
            })
            .collect();
        let mut sup = segs[0].clone();
        for s in &segs[1..4] {
            assert!(gro_merge(&mut sup, s, 65535));
        }
        // FIN is never merged.
        assert!(!gro_merge(&mut sup, &segs[4], 65535));
        assert_eq!(tcp_payload_len(&sup), Some(4000));
        assert!(ip_ok(&sup));
        make_partial(&mut sup);
        let mut out = Vec::new();
        assert_eq!(
            segment_tcp(&sup, 1000, &mut |s| out.push(s.to_vec())),
            Some(4)
        );
        for (i, s) in out.iter().enumerate() {
            assert!(tcp_ok(s), "segment {i} checksum");
            assert!(ip_ok(s), "segment {i} ip checksum");
            assert_eq!(&s[66..], &segs[i][66..]);
            assert_eq!(&s[38..42], &segs[i][38..42]);
        }
        // PSH only on the last one; IDs count up.
        assert_eq!(out[0][47], 0x10);
        let mut psh = tcp4(1, 0x18, &data[..3000]);
        make_partial(&mut psh);
        let mut out = Vec::new();
        segment_tcp(&psh, 1448, &mut |s| out.push(s.to_vec()));
        assert_eq!(out.len(), 3);
        assert_eq!(
            out.iter().map(|s| s[47]).collect::<Vec<_>>(),
            [0x10, 0x10, 0x18]
        );
        assert_eq!(out[2].len(), 66 + 3000 - 2 * 1448);
        assert_eq!(u16::from_be_bytes([out[1][18], out[1][19]]), 1);
        assert!(out.iter().all(|s| tcp_ok(s) && ip_ok(s)));
        // A gap in sequence numbers is not merged.
        let mut a = tcp4(0, 0x10, &data[..100]);
        assert!(!gro_merge(&mut a, &tcp4(101, 0x10, &data[..100]), 65535));
    }
}
