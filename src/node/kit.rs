//! The recovery kit: what a fresh machine needs to get a user's data back
//! after their laptop is lost, short enough to print on paper and type back
//! (borg's paper key is the model). `pangea key export` prints it.
//!
//! **Whoever holds the kit holds the data.** A plain kit *is* the owner's
//! master key and the network admin's key, written out; a sealed one is
//! them under a passphrase (argon2id, 64 MiB, t=3, then XChaCha20-Poly1305),
//! as strong as that passphrase.
//!
//! ```text
//! pangea recovery kit v1 plain          (or: v1 sealed)
//! 01 ABCD EFGH IJKL MNOP QRST UVWX YZ23 4567  K7Q2
//! 02 ...
//! ```
//!
//! * Payload: postcard of the contents ‖ the first 8 bytes of their BLAKE3.
//!   Addresses of the form `/ip4|ip6/…/tcp/…` or `/…/udp/…/quic-v1` are
//!   kept as binary (a third of their text), any other as text. Sealed:
//!   salt(16) ‖ nonce(24) ‖ XChaCha20-Poly1305 of that payload, under
//!   argon2id(passphrase, salt), with the header line as associated data.
//! * Text: the payload in base32 (RFC 4648, no padding), 32 characters a
//!   line in groups of 4. Each line starts with its number (01-99) and ends
//!   with a check, the first 4 base32 characters of BLAKE3(number byte ‖
//!   header ‖ the line's characters), so a typo is reported with its line.
//!
//! Reading forgives what people do when typing it back: any whitespace,
//! lower case, blank lines. The lines must come in order, each with its
//! number.

use std::fmt;
use std::net::IpAddr;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use data_encoding::BASE32_NOPAD;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

const PLAIN: &str = "pangea recovery kit v1 plain";
const SEALED: &str = "pangea recovery kit v1 sealed";
const LINE_CHARS: usize = 32;
const CHECK_CHARS: usize = 4;
const MAX_LINES: usize = 99;
const MAX_PEERS: usize = 4;
const MAX_ADDRS: usize = 2;
const SUM_LEN: usize = 8;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The most payload 99 lines hold.
const MAX_PAYLOAD: usize = MAX_LINES * LINE_CHARS * 5 / 8;
/// argon2id's memory cost in KiB (64 MiB) and passes. Written on no kit:
/// changing them makes every sealed kit unreadable.
const M_COST_KIB: u32 = 64 * 1024;
const T_COST: u32 = 3;
/// Tests seal at a cheaper memory cost (the real one is ~0.2 s a kit).
#[cfg(test)]
const KDF_M_KIB: u32 = 256;
#[cfg(not(test))]
const KDF_M_KIB: u32 = M_COST_KIB;

/// What a recovery kit holds. Its secrets are wiped on drop and never
/// formatted.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct KitContents {
    /// The owner's 32-byte master key (root secret).
    pub master: [u8; 32],
    /// The network admin's Ed25519 secret key (32 bytes, the seed).
    pub admin: [u8; 32],
    /// The network id.
    pub network: [u8; 16],
    /// A few storage members to dial first: (libp2p peer id bytes,
    /// multiaddr strings). At most 4 peers, at most 2 addrs each.
    pub peers: Vec<(Vec<u8>, Vec<String>)>,
}

impl fmt::Debug for KitContents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peers = self.peers.len();
        write!(
            f,
            "KitContents {{ master: <redacted>, admin: <redacted>, network: <redacted>, peers: {peers} }}"
        )
    }
}

/// Why a kit could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// The first line is not a kit's header.
    #[error(
        "not a recovery kit: its first line should read \"pangea recovery kit v1 plain\" (or sealed)"
    )]
    Header,
    /// A kit of another version.
    #[error("a recovery kit of version {0}: this pangea reads only v1")]
    Version(String),
    /// A line that does not read right: a typo, most likely.
    #[error("line {line}: {reason}")]
    Line {
        /// The line's number (1 is the first after the header).
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A line is not there.
    #[error("line {0} is missing")]
    Missing(usize),
    /// A sealed kit, read without its passphrase.
    #[error("this kit is sealed: it needs its passphrase")]
    NeedsPassphrase,
    /// The passphrase does not open the kit.
    #[error("wrong passphrase (or the kit was altered, or lines are missing at its end)")]
    Passphrase,
    /// Every line checks but the content does not.
    #[error("every line checks but the kit's content does not (lines missing at its end?)")]
    Corrupt,
    /// The contents do not fit on a kit.
    #[error("too much for a recovery kit: {0}")]
    TooLarge(&'static str),
    /// `Some("")` as the passphrase to seal with.
    #[error("an empty passphrase seals nothing: give one, or none for a plain kit")]
    EmptyPassphrase,
    /// argon2 or the system's randomness failed.
    #[error("could not seal or open the kit: {0}")]
    Seal(String),
}

impl KitError {
    fn line(line: usize, reason: &str) -> Self {
        KitError::Line {
            line,
            reason: reason.into(),
        }
    }
}

/// A payload, wiped when dropped.
type Bytes = Zeroizing<Vec<u8>>;

/// An address as the kit stores it: binary when it reads back as the same
/// text, else the text.
#[derive(Serialize, Deserialize)]
enum WireAddr {
    Tcp(IpAddr, u16),
    Quic(IpAddr, u16),
    Text(String),
}

/// The payload's serde mirror of [`KitContents`].
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct Wire {
    master: [u8; 32],
    admin: [u8; 32],
    network: [u8; 16],
    #[zeroize(skip)]
    peers: Vec<(Vec<u8>, Vec<WireAddr>)>,
}

impl KitContents {
    /// The kit as text, sealed under `passphrase` if one is given.
    pub fn to_text(&self, passphrase: Option<&str>) -> Result<String, KitError> {
        let header = header(passphrase.is_some());
        let plain = self.plain_payload()?;
        let payload = match passphrase {
            None => plain,
            Some("") => return Err(KitError::EmptyPassphrase),
            Some(p) => seal(&plain, p, header, KDF_M_KIB)?,
        };
        let encoded = Zeroizing::new(BASE32_NOPAD.encode(&payload));
        if encoded.len().div_ceil(LINE_CHARS) > MAX_LINES {
            return Err(KitError::TooLarge("more than 99 lines"));
        }
        let mut text = format!("{header}\n");
        for (i, chars) in encoded.as_bytes().chunks(LINE_CHARS).enumerate() {
            push_line(&mut text, i + 1, chars, header);
        }
        Ok(text)
    }

    /// Reads a kit back; `passphrase` is needed if it is sealed.
    pub fn from_text(text: &str, passphrase: Option<&str>) -> Result<KitContents, KitError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let sealed = parse_header(lines.next().ok_or(KitError::Header)?)?;
        let header = header(sealed);
        let rows: Vec<Result<Row, String>> = lines.map(parse_row).collect();
        if rows.is_empty() {
            return Err(KitError::Missing(1));
        }
        let mut data = Zeroizing::new(String::new());
        for (i, row) in rows.iter().enumerate() {
            let n = i + 1;
            let line = |reason: &str| KitError::line(n, reason);
            let row = row.as_ref().map_err(|r| line(r))?;
            if row.number != n {
                return Err(misnumbered(n, row, &rows[n..], header));
            }
            let len = row.chars.len();
            if len > LINE_CHARS || (n < rows.len() && len < LINE_CHARS) {
                return Err(line(&format!("it has {len} characters, not 32")));
            }
            if row.check != check(n, header, row.chars.as_bytes()) {
                return Err(line("its check does not match (a typo on this line?)"));
            }
            data.push_str(&row.chars);
        }
        let decoded = BASE32_NOPAD.decode(data.as_bytes());
        let payload = Zeroizing::new(decoded.map_err(|_| KitError::Corrupt)?);
        match (sealed, passphrase) {
            (false, _) => decode_plain(&payload),
            (true, None | Some("")) => Err(KitError::NeedsPassphrase),
            (true, Some(p)) => decode_plain(&open(&payload, p, header, KDF_M_KIB)?),
        }
    }

    /// Whether `text` is a sealed kit, by its header.
    pub fn is_sealed(text: &str) -> bool {
        let first = text.lines().map(str::trim).find(|l| !l.is_empty());
        matches!(first.map(parse_header), Some(Ok(true)))
    }

    fn plain_payload(&self) -> Result<Bytes, KitError> {
        if self.peers.len() > MAX_PEERS {
            return Err(KitError::TooLarge("more than 4 peers"));
        }
        if self.peers.iter().any(|(_, addrs)| addrs.len() > MAX_ADDRS) {
            return Err(KitError::TooLarge("more than 2 addresses for a peer"));
        }
        let peers = self.peers.iter();
        let peers = peers.map(|(id, a)| (id.clone(), a.iter().map(|a| pack_addr(a)).collect()));
        let (master, admin, network) = (self.master, self.admin, self.network);
        let wire = Wire {
            master,
            admin,
            network,
            peers: peers.collect(),
        };
        // Into a buffer of its final size: no copy of the keys left unwiped.
        let mut bytes = Zeroizing::new(vec![0u8; MAX_PAYLOAD]);
        let len = postcard::to_slice(&wire, &mut bytes[..MAX_PAYLOAD - SUM_LEN])
            .map_err(|_| KitError::TooLarge("more than 99 lines"))?
            .len();
        let sum = blake3::hash(&bytes[..len]);
        bytes[len..len + SUM_LEN].copy_from_slice(&sum.as_bytes()[..SUM_LEN]);
        bytes.truncate(len + SUM_LEN);
        Ok(bytes)
    }
}

fn header(sealed: bool) -> &'static str {
    if sealed { SEALED } else { PLAIN }
}

/// Whether the header says sealed.
fn parse_header(line: &str) -> Result<bool, KitError> {
    let words = line.to_ascii_lowercase();
    match words.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["pangea", "recovery", "kit", "v1", "plain"] => Ok(false),
        ["pangea", "recovery", "kit", "v1", "sealed"] => Ok(true),
        ["pangea", "recovery", "kit", v, ..] if *v != "v1" => Err(KitError::Version(v.to_string())),
        _ => Err(KitError::Header),
    }
}

/// A line's check: 4 base32 characters.
fn check(number: usize, header: &str, chars: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&[number as u8]); // at most MAX_LINES in a kit written
    h.update(header.as_bytes());
    h.update(chars);
    let mut check = BASE32_NOPAD.encode(&h.finalize().as_bytes()[..3]);
    check.truncate(CHECK_CHARS);
    check
}

fn push_line(text: &mut String, number: usize, chars: &[u8], header: &str) {
    text.push_str(&format!("{number:02}"));
    for group in chars.chunks(4) {
        text.push(' ');
        text.extend(group.iter().map(|&b| char::from(b)));
    }
    // Each group of 4 after a space: pad, so the last line's check lines up.
    let pad = LINE_CHARS * 5 / 4 - chars.len() - chars.len().div_ceil(4) + 2;
    text.extend(std::iter::repeat_n(' ', pad));
    text.push_str(&check(number, header, chars));
    text.push('\n');
}

/// A line as typed: upper case, without whitespace.
#[derive(Zeroize, ZeroizeOnDrop)]
struct Row {
    number: usize,
    chars: String,
    check: String,
}

fn parse_row(line: &str) -> Result<Row, String> {
    let first = line.split_whitespace().next().unwrap_or_default();
    // "01 ABCD…" as printed, or "01ABCD…" typed without the space.
    let digits = match first.bytes().all(|b| b.is_ascii_digit()) {
        true => first.len(),
        false => first.bytes().take(2).take_while(u8::is_ascii_digit).count(),
    };
    let mut compact: String = line.split_whitespace().collect();
    compact.make_ascii_uppercase();
    let (number, body) = compact.split_at(digits); // ASCII digits: a char boundary
    let number = number
        .parse()
        .map_err(|_| "it should start with its number, like 01")?;
    if let Some(c) = body.chars().find(|c| !matches!(c, 'A'..='Z' | '2'..='7')) {
        return Err(format!(
            "'{c}' is not in a kit's alphabet (letters, digits 2 to 7)"
        ));
    }
    let Some(at) = body.len().checked_sub(CHECK_CHARS).filter(|&at| at > 0) else {
        return Err("it is too short".into());
    };
    let (chars, check) = body.split_at(at); // ASCII, checked above
    Ok(Row {
        number,
        chars: chars.into(),
        check: check.into(),
    })
}

/// The error for the `n`th line when it carries another number.
fn misnumbered(n: usize, row: &Row, after: &[Result<Row, String>], header: &str) -> KitError {
    let (m, line) = (row.number, KitError::line);
    if row.check == check(n, header, row.chars.as_bytes()) {
        line(n, &format!("its number should be {n:02}"))
    } else if row.check != check(m, header, row.chars.as_bytes()) {
        line(
            n,
            "its number or its check does not match (a typo on this line?)",
        )
    } else if m < n {
        line(m, "it is there twice, or the lines are out of order")
    } else if after.iter().any(|r| matches!(r, Ok(r) if r.number == n)) {
        line(
            n,
            &format!("it comes after line {m:02}: the lines are out of order"),
        )
    } else {
        KitError::Missing(n)
    }
}

fn pack_addr(text: &str) -> WireAddr {
    let ip_port = |ip: &str, port: &str| Some((ip.parse().ok()?, port.parse().ok()?));
    let packed = match text.split('/').collect::<Vec<_>>().as_slice() {
        ["", "ip4" | "ip6", ip, "tcp", port] => ip_port(ip, port).map(|(i, p)| WireAddr::Tcp(i, p)),
        ["", "ip4" | "ip6", ip, "udp", port, "quic-v1"] => {
            ip_port(ip, port).map(|(i, p)| WireAddr::Quic(i, p))
        }
        _ => None,
    };
    // Binary only when it reads back as the same text.
    packed
        .filter(|a| unpack_addr(a) == text)
        .unwrap_or_else(|| WireAddr::Text(text.into()))
}

fn unpack_addr(addr: &WireAddr) -> String {
    let family = |ip: &IpAddr| if ip.is_ipv4() { "ip4" } else { "ip6" };
    match addr {
        WireAddr::Tcp(ip, port) => format!("/{}/{ip}/tcp/{port}", family(ip)),
        WireAddr::Quic(ip, port) => format!("/{}/{ip}/udp/{port}/quic-v1", family(ip)),
        WireAddr::Text(text) => text.clone(),
    }
}

fn decode_plain(payload: &[u8]) -> Result<KitContents, KitError> {
    use KitError::Corrupt;
    let (body, sum) = payload.split_last_chunk::<SUM_LEN>().ok_or(Corrupt)?;
    if blake3::hash(body).as_bytes()[..SUM_LEN] != *sum {
        return Err(Corrupt);
    }
    let (wire, rest) = postcard::take_from_bytes::<Wire>(body).map_err(|_| Corrupt)?;
    let fits = wire.peers.len() <= MAX_PEERS && wire.peers.iter().all(|p| p.1.len() <= MAX_ADDRS);
    if !rest.is_empty() || !fits {
        return Err(Corrupt);
    }
    let peers = wire.peers.iter();
    let peers = peers.map(|(id, a)| (id.clone(), a.iter().map(unpack_addr).collect()));
    let (master, admin, network) = (wire.master, wire.admin, wire.network);
    Ok(KitContents {
        master,
        admin,
        network,
        peers: peers.collect(),
    })
}

/// The cipher for `passphrase`: argon2id at `m_kib` KiB, [`T_COST`] passes.
fn cipher(passphrase: &str, salt: &[u8], m_kib: u32) -> Result<XChaCha20Poly1305, KitError> {
    let kdf = |e: argon2::Error| KitError::Seal(e.to_string());
    let params = argon2::Params::new(m_kib, T_COST, 1, Some(32)).map_err(kdf)?;
    let mut key = Zeroizing::new([0u8; 32]);
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, &mut *key)
        .map_err(kdf)?;
    Ok(XChaCha20Poly1305::new((&*key).into()))
}

/// salt ‖ nonce ‖ ciphertext ‖ tag.
fn seal(plain: &[u8], pass: &str, header: &str, m_kib: u32) -> Result<Bytes, KitError> {
    let (mut salt, mut nonce) = ([0u8; SALT_LEN], [0u8; NONCE_LEN]);
    let random = |e: getrandom::Error| KitError::Seal(e.to_string());
    getrandom::fill(&mut salt).map_err(random)?;
    getrandom::fill(&mut nonce).map_err(random)?;
    let cipher = cipher(pass, &salt, m_kib)?;
    let mut out = Zeroizing::new([&salt[..], &nonce, plain].concat());
    let tag = cipher
        .encrypt_inout_detached(
            &nonce.into(),
            header.as_bytes(),
            (&mut out[SALT_LEN + NONCE_LEN..]).into(),
        )
        .map_err(|_| KitError::TooLarge("more than the cipher takes"))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

fn open(payload: &[u8], pass: &str, header: &str, m_kib: u32) -> Result<Bytes, KitError> {
    use KitError::Corrupt;
    let (salt, rest) = payload.split_first_chunk::<SALT_LEN>().ok_or(Corrupt)?;
    let (nonce, rest) = rest.split_first_chunk::<NONCE_LEN>().ok_or(Corrupt)?;
    let (ciphertext, tag) = rest.split_last_chunk::<TAG_LEN>().ok_or(Corrupt)?;
    let cipher = cipher(pass, salt, m_kib)?;
    let mut plain = Zeroizing::new(ciphertext.to_vec());
    let buf = plain.as_mut_slice().into();
    let opened = cipher.decrypt_inout_detached(
        &XNonce::from(*nonce),
        header.as_bytes(),
        buf,
        &(*tag).into(),
    );
    opened.map_err(|_| KitError::Passphrase)?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: u8 = 0xa7;
    const ADMIN: u8 = 0xc3;

    /// A kit with `peers` peers, each an Ed25519-shaped id, tcp and quic.
    fn kit(peers: u8) -> KitContents {
        let peer = |i: u8| {
            let id = [&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20][..], &[i; 32]].concat();
            let ip = format!("192.168.1.{}", 10 + i);
            (
                id,
                vec![
                    format!("/ip4/{ip}/tcp/4001"),
                    format!("/ip4/{ip}/udp/4001/quic-v1"),
                ],
            )
        };
        let peers = (1..=peers).map(peer).collect();
        KitContents {
            master: [MASTER; 32],
            admin: [ADMIN; 32],
            network: [0x11; 16],
            peers,
        }
    }

    fn same(a: &KitContents, b: &KitContents) {
        assert_eq!(
            (a.master, a.admin, a.network, &a.peers),
            (b.master, b.admin, b.network, &b.peers)
        );
    }

    fn read(text: &str, pass: Option<&str>) -> Result<KitContents, KitError> {
        KitContents::from_text(text, pass)
    }

    /// Line `n` (1 is the first after the header) changed by `f`.
    fn edit(text: &str, n: usize, f: impl FnOnce(&str) -> String) -> String {
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines[n] = f(&lines[n]);
        lines.join("\n")
    }

    /// A line with its first character changed.
    fn typo(line: &str) -> String {
        let c = if &line[3..4] == "A" { "B" } else { "A" };
        format!("{}{c}{}", &line[..3], &line[4..])
    }

    fn line_of(e: KitError) -> usize {
        match e {
            KitError::Line { line, .. } => line,
            e => panic!("not a line error: {e}"),
        }
    }

    #[test]
    fn round_trips() {
        let mut k = kit(3);
        k.peers.push((
            vec![1, 2],
            vec!["/dns4/a.example/tcp/1".into(), "/ip6/0:0::1/tcp/7".into()],
        ));
        let text = k.to_text(None).unwrap();
        println!("{}", kit(3).to_text(None).unwrap());
        assert!(
            text.starts_with("pangea recovery kit v1 plain\n") && !KitContents::is_sealed(&text)
        );
        same(&read(&text, None).unwrap(), &k);
        same(&read(&text, Some("not needed")).unwrap(), &k);
        let sealed = k.to_text(Some("correct horse")).unwrap();
        assert!(
            sealed.starts_with("pangea recovery kit v1 sealed\n")
                && KitContents::is_sealed(&sealed)
        );
        same(&read(&sealed, Some("correct horse")).unwrap(), &k);
        assert!(matches!(
            k.to_text(Some("")),
            Err(KitError::EmptyPassphrase)
        ));
    }

    #[test]
    fn a_typo_is_reported_on_its_line() {
        let text = kit(3).to_text(None).unwrap();
        let lines = text.lines().count() - 1;
        assert!(lines >= 10);
        for n in 1..=lines {
            assert_eq!(line_of(read(&edit(&text, n, typo), None).unwrap_err()), n);
        }
        let in_check = edit(&text, 4, |l| {
            format!(
                "{}{}",
                &l[..l.len() - 1],
                if l.ends_with('A') { 'B' } else { 'A' }
            )
        });
        assert_eq!(line_of(read(&in_check, None).unwrap_err()), 4);
        let in_number = edit(&text, 5, |l| format!("07{}", &l[2..]));
        assert_eq!(line_of(read(&in_number, None).unwrap_err()), 5);
        let msg = read(&edit(&text, 3, typo), None).unwrap_err().to_string();
        assert_eq!(
            msg,
            "line 3: its check does not match (a typo on this line?)"
        );
    }

    #[test]
    fn swapped_or_missing_lines_are_caught() {
        let text = kit(3).to_text(None).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.swap(2, 3);
        assert_eq!(line_of(read(&lines.join("\n"), None).unwrap_err()), 2);
        // The contents swapped under the right numbers.
        let (l2, l3) = (lines[3], lines[2]);
        let swapped = edit(&edit(&text, 2, |_| format!("02{}", &l3[2..])), 3, |_| {
            format!("03{}", &l2[2..])
        });
        assert_eq!(line_of(read(&swapped, None).unwrap_err()), 2);
        lines.swap(2, 3);
        lines.remove(3);
        assert!(matches!(
            read(&lines.join("\n"), None),
            Err(KitError::Missing(3))
        ));
        assert!(matches!(read(lines[0], None), Err(KitError::Missing(1))));
    }

    #[test]
    fn passphrase_errors() {
        let text = kit(1).to_text(Some("right")).unwrap();
        assert!(matches!(
            read(&text, Some("wrong")),
            Err(KitError::Passphrase)
        ));
        assert!(matches!(read(&text, None), Err(KitError::NeedsPassphrase)));
        assert!(matches!(
            read(&text, Some("")),
            Err(KitError::NeedsPassphrase)
        ));
    }

    #[test]
    fn a_tampered_sealed_line_with_a_good_check_still_fails() {
        let text = kit(3).to_text(Some("pass")).unwrap();
        for n in [1, 2, 4] {
            let tampered = edit(&text, n, |l| {
                let chars: String = typo(l)[2..l.len() - 4].split_whitespace().collect();
                let mut line = String::new();
                push_line(&mut line, n, chars.as_bytes(), header(true));
                line.trim_end().to_string()
            });
            assert_ne!(tampered, text);
            let e = read(&tampered, Some("pass")).unwrap_err();
            assert!(
                matches!(e, KitError::Passphrase | KitError::Corrupt),
                "line {n}: {e}"
            );
        }
    }

    #[test]
    fn lower_case_and_stray_whitespace_still_parse() {
        let k = kit(3);
        let text = k.to_text(Some("pw")).unwrap().to_lowercase();
        let messy = text.lines().skip(1).enumerate().map(|(i, l)| match i % 3 {
            0 => format!("   {l}\t  \n"),
            1 => l.split_whitespace().collect::<Vec<_>>().join("  "),
            _ => format!(
                "{} {}",
                &l[..2],
                l[2..].split_whitespace().collect::<String>()
            ),
        });
        let messy = format!(
            "\n  PANGEA   Recovery kit V1  SEALED \n{}\n\n",
            messy.collect::<Vec<_>>().join("\n\n")
        );
        same(&read(&messy, Some("pw")).unwrap(), &k);
    }

    #[test]
    fn headers() {
        let v2 = kit(1).to_text(None).unwrap().replace("v1", "v2");
        assert!(matches!(read(&v2, None), Err(KitError::Version(v)) if v == "v2"));
        assert!(matches!(
            read("borg key\n01 AAAA", None),
            Err(KitError::Header)
        ));
        assert!(matches!(read("  \n", None), Err(KitError::Header)));
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let shown = format!("{:?} {:#?}", kit(2), kit(2)).to_lowercase();
        for byte in [MASTER, ADMIN] {
            assert!(!shown.contains(&format!("{byte:02x}{byte:02x}")), "{shown}");
            assert!(!shown.contains(&byte.to_string()), "{shown}");
        }
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn three_peers_fit_on_16_lines() {
        let text = kit(3).to_text(None).unwrap();
        assert!(text.lines().count() <= 16, "{text}");
        assert!(matches!(kit(5).to_text(None), Err(KitError::TooLarge(_))));
    }

    #[test]
    fn the_real_cost_runs() {
        assert_eq!((M_COST_KIB, T_COST), (64 * 1024, 3));
        let sealed = seal(b"secret", "pw", "h", M_COST_KIB).unwrap();
        assert_eq!(
            &open(&sealed, "pw", "h", M_COST_KIB).unwrap()[..],
            b"secret"
        );
        assert!(matches!(
            open(&sealed, "pw", "h", KDF_M_KIB),
            Err(KitError::Passphrase)
        ));
    }
}
