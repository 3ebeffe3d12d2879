//! The framings a service or a client connection can declare: how the agent splits the byte
//! stream into messages on the NIC (docs/payload-api.md, *Framing*). This is only the
//! application-facing spelling of `shm_proto::record::FramingSpec`.

use shm_proto::record::{self, FramingSpec};

/// Width of a length prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    U16,
    U32,
}

/// What a request sent on an HTTP/1.1 client connection ([`Framing::Http1Response`]) was, for
/// the framing of its response (RFC 9112 6.3): [`crate::Group::expect_response`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseTo {
    /// Any request but HEAD and CONNECT (the default for every response not announced).
    Other,
    /// HEAD: the response has no body, whatever its Content-Length says.
    Head,
    /// CONNECT: a 2xx response ends HTTP on the connection (what follows is raw bytes).
    Connect,
}

impl ResponseTo {
    pub(crate) fn code(self) -> u8 {
        match self {
            ResponseTo::Other => record::EXPECT_OTHER,
            ResponseTo::Head => record::EXPECT_HEAD,
            ResponseTo::Connect => record::EXPECT_CONNECT,
        }
    }
}

/// How the agent splits a connection's bytes into messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Every available byte is message content (messages of at most `max_message` bytes).
    Raw,
    /// A length header, then the payload; the message is header plus payload.
    Length {
        width: Width,
        big_endian: bool,
        /// The length counts the header too.
        includes_header: bool,
    },
    /// One line per message, delimiter included. `crlf`: lines end in `\r\n` and a bare `\n`
    /// is malformed (`bare_lf`).
    Line { crlf: bool },
    /// HTTP/1.1 requests (servers).
    Http1Request,
    /// HTTP/1.1 responses (clients).
    Http1Response,
    /// RESP2 commands (servers).
    RespRequest,
    /// RESP2 replies (clients).
    RespReply,
}

impl Framing {
    /// The option value the agent receives (`SOL_SNSTACK`/`SNSTACK_FRAMING`).
    pub fn spec(&self, max_message: u32) -> FramingSpec {
        let (kind, flags, width) = match *self {
            Framing::Raw => (record::FRAMING_RAW, 0, 0),
            Framing::Length {
                width,
                big_endian,
                includes_header,
            } => {
                let mut f = 0;
                if big_endian {
                    f |= record::SPEC_BIG_ENDIAN;
                }
                if includes_header {
                    f |= record::SPEC_INCLUDES_HEADER;
                }
                let w = match width {
                    Width::U16 => 2,
                    Width::U32 => 4,
                };
                (record::FRAMING_LENGTH, f, w)
            }
            Framing::Line { crlf } => (
                record::FRAMING_LINE,
                if crlf { record::SPEC_CRLF } else { 0 },
                0,
            ),
            Framing::Http1Request => (record::FRAMING_HTTP1_REQUEST, 0, 0),
            Framing::Http1Response => (record::FRAMING_HTTP1_RESPONSE, 0, 0),
            Framing::RespRequest => (record::FRAMING_RESP_REQUEST, 0, 0),
            Framing::RespReply => (record::FRAMING_RESP_REPLY, 0, 0),
        };
        FramingSpec {
            kind,
            flags,
            width,
            max_message,
        }
    }

    /// The framing of a validated spec (the C API's `snp_framing`); `None` when the agent would
    /// refuse it.
    pub fn from_spec(s: &FramingSpec) -> Option<Framing> {
        let s = FramingSpec::decode(&s.encode())?;
        Some(match s.kind {
            record::FRAMING_RAW => Framing::Raw,
            record::FRAMING_LENGTH => Framing::Length {
                width: if s.width == 2 { Width::U16 } else { Width::U32 },
                big_endian: s.flags & record::SPEC_BIG_ENDIAN != 0,
                includes_header: s.flags & record::SPEC_INCLUDES_HEADER != 0,
            },
            record::FRAMING_LINE => Framing::Line {
                crlf: s.flags & record::SPEC_CRLF != 0,
            },
            record::FRAMING_HTTP1_REQUEST => Framing::Http1Request,
            record::FRAMING_HTTP1_RESPONSE => Framing::Http1Response,
            record::FRAMING_RESP_REQUEST => Framing::RespRequest,
            _ => Framing::RespReply,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_framing_encodes_to_a_spec_the_agent_accepts_and_back() {
        let all = [
            Framing::Raw,
            Framing::Length {
                width: Width::U16,
                big_endian: true,
                includes_header: false,
            },
            Framing::Length {
                width: Width::U32,
                big_endian: false,
                includes_header: true,
            },
            Framing::Line { crlf: true },
            Framing::Line { crlf: false },
            Framing::Http1Request,
            Framing::Http1Response,
            Framing::RespRequest,
            Framing::RespReply,
        ];
        for f in all {
            let s = f.spec(4096);
            assert_eq!(FramingSpec::decode(&s.encode()), Some(s), "{f:?}");
            assert_eq!(Framing::from_spec(&s), Some(f));
        }
        let bad = FramingSpec {
            kind: record::FRAMING_LINE,
            flags: record::SPEC_BIG_ENDIAN,
            width: 0,
            max_message: 0,
        };
        assert_eq!(Framing::from_spec(&bad), None);
    }
}
