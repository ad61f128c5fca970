//! A small blocking client for the admin requests of a running `tallyd`
//! (`HELLO`, then one `SNAPSHOT` or `COMPACT`), over the protocol of
//! docs/PROTOCOL.md.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::BytesMut;
use tallydb_protocol::{
    decode_frame, encode_request, Hello, Message, Request, Response, HANDSHAKE_MAX_FRAME,
};

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The server could not be reached or the connection broke.
    #[error("{what} {addr}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The server address.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The server answered with an error.
    #[error("the server refused the request: {message} (error code {code})")]
    Refused {
        /// Protocol error code.
        code: u16,
        /// The server's message.
        message: String,
    },
    /// The server sent something this client does not understand.
    #[error("unexpected answer from {addr}: {what}")]
    Protocol {
        /// The server address.
        addr: String,
        /// What was wrong.
        what: String,
    },
}

/// A connection after a successful handshake.
#[derive(Debug)]
pub struct AdminConnection {
    addr: String,
    stream: TcpStream,
    buf: Vec<u8>,
    max_frame: u32,
    next_id: u32,
}

impl AdminConnection {
    /// Connects to `addr` and says `HELLO` with `token`. `timeout` bounds the
    /// connect and every read (admin requests such as a snapshot of a large
    /// directory can take minutes).
    pub fn connect(addr: &str, token: &[u8], timeout: Duration) -> Result<Self, WireError> {
        let io = |what: &'static str| {
            let addr = addr.to_string();
            move |source| WireError::Io { what, addr, source }
        };
        let sock = addr
            .to_socket_addrs()
            .map_err(io("resolve"))?
            .next()
            .ok_or_else(|| WireError::Io {
                what: "resolve",
                addr: addr.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })?;
        let stream =
            TcpStream::connect_timeout(&sock, Duration::from_secs(10)).map_err(io("connect to"))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(io("configure"))?;
        let mut c = AdminConnection {
            addr: addr.to_string(),
            stream,
            buf: Vec::new(),
            max_frame: HANDSHAKE_MAX_FRAME,
            next_id: 1,
        };
        let max = c.call(
            &Request::Hello(Hello::new("tally-admin", token)),
            |r| match r {
                Response::HelloOk(ok) => Some(ok.limits.max_frame),
                _ => None,
            },
        )?;
        c.max_frame = max;
        Ok(c)
    }

    /// Sends `req` and waits for its `ADMIN_OK` message.
    pub fn admin(&mut self, req: &Request<'_>) -> Result<String, WireError> {
        self.call(req, |r| match r {
            Response::AdminOk(ok) => Some(ok.message.to_string()),
            _ => None,
        })
    }

    fn call<T>(
        &mut self,
        req: &Request<'_>,
        want: impl Fn(&Response<'_>) -> Option<T>,
    ) -> Result<T, WireError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = BytesMut::new();
        encode_request(id, req, &mut out);
        let addr = self.addr.clone();
        self.stream
            .write_all(&out)
            .map_err(|source| WireError::Io {
                what: "send to",
                addr: addr.clone(),
                source,
            })?;
        loop {
            let decoded =
                decode_frame(&self.buf, self.max_frame).map_err(|e| WireError::Protocol {
                    addr: addr.clone(),
                    what: e.to_string(),
                })?;
            if let Some((frame, used)) = decoded {
                let result = match frame.message {
                    Message::Response(Response::Error(e)) => Err(WireError::Refused {
                        code: e.code,
                        message: e.message.to_string(),
                    }),
                    Message::Response(r) => want(&r).ok_or_else(|| WireError::Protocol {
                        addr: addr.clone(),
                        what: format!("opcode {:?}", r.opcode()),
                    }),
                    Message::Request(_) => Err(WireError::Protocol {
                        addr: addr.clone(),
                        what: "a request".into(),
                    }),
                };
                self.buf.drain(..used);
                return result;
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(WireError::Io {
                        what: "read from",
                        addr,
                        source: std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the server closed the connection",
                        ),
                    })
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(WireError::Io {
                        what: "read from",
                        addr,
                        source,
                    })
                }
            }
        }
    }
}
