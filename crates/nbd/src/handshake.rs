//! The fixed newstyle handshake: greeting, client flags and option haggling up to
//! `NBD_OPT_EXPORT_NAME` or a successful `NBD_OPT_GO`.

use shorthorn_block::BlockDevice;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::export::{Export, ServerConfig};
use crate::proto::{self, *};
use crate::reader::WireReader;

/// Options larger than [`MAX_OPTION_LEN`] but at most this big are read and discarded
/// (and answered with `NBD_REP_ERR_TOO_BIG`); anything larger closes the connection.
const MAX_SKIPPED_OPTION_LEN: u32 = 1 << 20;

/// What negotiation agreed on, for the transmission phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// Index of the chosen export.
    pub export: usize,
    /// Export size sent to the client.
    pub size: u64,
    /// Transmission flags sent to the client.
    pub flags: u16,
    /// Whether structured replies were negotiated.
    pub structured: bool,
    /// The context id of `base:allocation`, if the client selected it for this export.
    pub base_allocation: Option<u32>,
}

/// How negotiation ended without an error.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Enter the transmission phase.
    Transmission(Negotiated),
    /// The client sent `NBD_OPT_ABORT`.
    Aborted,
}

/// Why negotiation ended the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// Reading or writing the socket failed, or the client went away.
    #[error("I/O error during handshake: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol or asked for something that can only be refused by
    /// closing the connection.
    #[error("{0}")]
    Refused(String),
}

fn refused(reason: impl Into<String>) -> HandshakeError {
    HandshakeError::Refused(reason.into())
}

fn eof() -> HandshakeError {
    HandshakeError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "client closed the connection during the handshake",
    ))
}

/// Finds an export by name; the empty name means the first (default) export.
pub(crate) fn find_export<D>(exports: &[Export<D>], name: &str) -> Option<usize> {
    if name.is_empty() {
        return (!exports.is_empty()).then_some(0);
    }
    exports.iter().position(|e| e.name == name)
}

async fn send<W: AsyncWrite + Unpin>(out: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(bytes).await?;
    out.flush().await
}

/// Runs the handshake on a fresh connection.
pub(crate) async fn negotiate<R, W, D>(
    wire: &mut WireReader<R>,
    out: &mut W,
    exports: &[Export<D>],
    config: &ServerConfig,
    peer: &str,
) -> Result<Outcome, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    D: BlockDevice,
{
    send(out, &greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)).await?;
    if !wire.fill(4).await? {
        return Err(eof());
    }
    let client_flags = u32::from_be_bytes(read_array(wire));
    if client_flags & !KNOWN_CLIENT_FLAGS != 0 {
        return Err(refused(format!("unknown client flags {client_flags:#x}")));
    }
    if client_flags & FLAG_C_FIXED_NEWSTYLE == 0 {
        return Err(refused(
            "client does not support fixed newstyle negotiation",
        ));
    }
    let mut state = State {
        no_zeroes: client_flags & FLAG_C_NO_ZEROES != 0,
        structured: false,
        meta_export: None,
    };
    let mut options = 0u32;
    loop {
        if !wire.fill(OPTION_HEADER_LEN).await? {
            return Err(eof());
        }
        let header = decode_option_header(&read_array(wire))
            .map_err(|e| refused(format!("bad option header: {e}")))?;
        tracing::debug!(peer, option = header.option, len = header.len, "option");
        options += 1;
        if options > config.max_options {
            return Err(refused(format!(
                "more than {} options in one handshake",
                config.max_options
            )));
        }
        if header.len > MAX_OPTION_LEN {
            if header.option == OPT_EXPORT_NAME || header.len > MAX_SKIPPED_OPTION_LEN {
                return Err(refused(format!(
                    "option {} carries {} bytes, more than the {MAX_OPTION_LEN} allowed",
                    header.option, header.len
                )));
            }
            if !wire.skip(to_usize(header.len)).await? {
                return Err(eof());
            }
            let message = format!(
                "option data of {} bytes exceeds the limit of {MAX_OPTION_LEN}",
                header.len
            );
            send(out, &option_error(header.option, REP_ERR_TOO_BIG, &message)).await?;
            continue;
        }
        let len = to_usize(header.len);
        if !wire.fill(len).await? {
            return Err(eof());
        }
        let data = wire.take(len);
        match state
            .handle(header.option, &data, exports, out, peer)
            .await?
        {
            Step::Continue => {}
            Step::Done(outcome) => return Ok(outcome),
        }
    }
}

/// Takes the next `N` buffered bytes as an array; the caller has filled them.
fn read_array<R, const N: usize>(wire: &mut WireReader<R>) -> [u8; N]
where
    R: AsyncRead + Unpin,
{
    let mut out = [0u8; N];
    let bytes = wire.take(N);
    out[..bytes.len()].copy_from_slice(&bytes);
    out
}

fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

enum Step {
    Continue,
    Done(Outcome),
}

struct State {
    no_zeroes: bool,
    structured: bool,
    /// The export for which `base:allocation` was selected by the last
    /// `NBD_OPT_SET_META_CONTEXT`, if any.
    meta_export: Option<usize>,
}

impl State {
    fn negotiated<D>(&self, exports: &[Export<D>], index: usize) -> Option<Negotiated>
    where
        D: BlockDevice,
    {
        let export = exports.get(index)?;
        Some(Negotiated {
            export: index,
            size: export.device.size(),
            flags: export.transmission_flags(self.structured),
            structured: self.structured,
            base_allocation: (self.meta_export == Some(index)).then_some(BASE_ALLOCATION_ID),
        })
    }

    async fn handle<W, D>(
        &mut self,
        option: u32,
        data: &[u8],
        exports: &[Export<D>],
        out: &mut W,
        peer: &str,
    ) -> Result<Step, HandshakeError>
    where
        W: AsyncWrite + Unpin,
        D: BlockDevice,
    {
        match option {
            OPT_EXPORT_NAME => {
                let name = std::str::from_utf8(data)
                    .map_err(|_| refused("export name is not valid UTF-8"))?;
                let index = find_export(exports, name)
                    .ok_or_else(|| refused(format!("unknown export {name:?}")))?;
                let negotiated = self
                    .negotiated(exports, index)
                    .ok_or_else(|| refused("export vanished"))?;
                send(
                    out,
                    &export_name_reply(negotiated.size, negotiated.flags, self.no_zeroes),
                )
                .await?;
                Ok(Step::Done(Outcome::Transmission(negotiated)))
            }
            OPT_ABORT => {
                // The client may already have closed; a failed ACK changes nothing.
                let _ = send(out, &option_reply(option, REP_ACK, &[])).await;
                Ok(Step::Done(Outcome::Aborted))
            }
            OPT_LIST => {
                if !data.is_empty() {
                    send(
                        out,
                        &option_error(option, REP_ERR_INVALID, "NBD_OPT_LIST takes no data"),
                    )
                    .await?;
                    return Ok(Step::Continue);
                }
                let mut reply = Vec::new();
                for export in exports {
                    reply.extend(option_reply(
                        option,
                        REP_SERVER,
                        &rep_server_payload(&export.name, &export.description),
                    ));
                }
                reply.extend(option_reply(option, REP_ACK, &[]));
                send(out, &reply).await?;
                Ok(Step::Continue)
            }
            OPT_INFO | OPT_GO => self.info_or_go(option, data, exports, out, peer).await,
            OPT_STRUCTURED_REPLY => {
                if data.is_empty() {
                    self.structured = true;
                    send(out, &option_reply(option, REP_ACK, &[])).await?;
                } else {
                    send(
                        out,
                        &option_error(
                            option,
                            REP_ERR_INVALID,
                            "NBD_OPT_STRUCTURED_REPLY takes no data",
                        ),
                    )
                    .await?;
                }
                Ok(Step::Continue)
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let reply = self.meta_context(option, data, exports);
                send(out, &reply).await?;
                Ok(Step::Continue)
            }
            _ => {
                tracing::debug!(peer, option, "unsupported option");
                let message = format!("option {option} is not supported by this server");
                send(out, &option_error(option, REP_ERR_UNSUP, &message)).await?;
                Ok(Step::Continue)
            }
        }
    }

    async fn info_or_go<W, D>(
        &mut self,
        option: u32,
        data: &[u8],
        exports: &[Export<D>],
        out: &mut W,
        peer: &str,
    ) -> Result<Step, HandshakeError>
    where
        W: AsyncWrite + Unpin,
        D: BlockDevice,
    {
        let request = match parse_info_request(data) {
            Ok(r) => r,
            Err(e) => {
                send(out, &option_error(option, REP_ERR_INVALID, &e.to_string())).await?;
                return Ok(Step::Continue);
            }
        };
        let Some(negotiated) =
            find_export(exports, &request.name).and_then(|i| self.negotiated(exports, i))
        else {
            tracing::info!(peer, export = %request.name, "client asked for an unknown export");
            let message = format!("no export named {:?}", request.name);
            send(out, &option_error(option, REP_ERR_UNKNOWN, &message)).await?;
            return Ok(Step::Continue);
        };
        let Some(export) = exports.get(negotiated.export) else {
            return Err(refused("export vanished"));
        };
        let mut reply = Vec::new();
        reply.extend(option_reply(
            option,
            REP_INFO,
            &info_export_payload(negotiated.size, negotiated.flags),
        ));
        if request.requests.contains(&INFO_NAME) {
            reply.extend(option_reply(
                option,
                REP_INFO,
                &info_string_payload(INFO_NAME, &export.name),
            ));
        }
        if request.requests.contains(&INFO_DESCRIPTION) && !export.description.is_empty() {
            reply.extend(option_reply(
                option,
                REP_INFO,
                &info_string_payload(INFO_DESCRIPTION, &export.description),
            ));
        }
        // Always sent: the 32 MiB maximum is stricter than the protocol's default.
        reply.extend(option_reply(
            option,
            REP_INFO,
            &info_block_size_payload(MIN_BLOCK_SIZE, PREFERRED_BLOCK_SIZE, MAX_BLOCK_SIZE),
        ));
        reply.extend(option_reply(option, REP_ACK, &[]));
        send(out, &reply).await?;
        if option == OPT_GO {
            Ok(Step::Done(Outcome::Transmission(negotiated)))
        } else {
            Ok(Step::Continue)
        }
    }

    /// Answers `NBD_OPT_LIST_META_CONTEXT` or `NBD_OPT_SET_META_CONTEXT`; returns the
    /// encoded replies.
    fn meta_context<D>(&mut self, option: u32, data: &[u8], exports: &[Export<D>]) -> Vec<u8> {
        let setting = option == OPT_SET_META_CONTEXT;
        if setting {
            // Setting replaces the previous selection, also when it fails.
            self.meta_export = None;
        }
        if !self.structured {
            return option_error(
                option,
                REP_ERR_INVALID,
                "negotiate NBD_OPT_STRUCTURED_REPLY before metadata contexts",
            );
        }
        let request = match parse_meta_context_request(data) {
            Ok(r) => r,
            Err(e) => return option_error(option, REP_ERR_INVALID, &e.to_string()),
        };
        let Some(index) = find_export(exports, &request.name) else {
            let message = format!("no export named {:?}", request.name);
            return option_error(option, REP_ERR_UNKNOWN, &message);
        };
        let mut selected = !setting && request.queries.is_empty();
        for query in &request.queries {
            match proto::match_query(query, !setting) {
                Ok(QueryMatch::BaseAllocation) => selected = true,
                Ok(QueryMatch::Nothing) => {}
                Err(e) => return option_error(option, REP_ERR_INVALID, &e.to_string()),
            }
        }
        let mut reply = Vec::new();
        if selected {
            let id = if setting { BASE_ALLOCATION_ID } else { 0 };
            reply.extend(option_reply(
                option,
                REP_META_CONTEXT,
                &meta_context_payload(id, BASE_ALLOCATION),
            ));
            if setting {
                self.meta_export = Some(index);
            }
        }
        reply.extend(option_reply(option, REP_ACK, &[]));
        reply
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use shorthorn_block::testing::MemDevice;
    use tokio::io::{AsyncReadExt, DuplexStream};

    fn exports() -> Vec<Export<MemDevice>> {
        vec![
            Export::new("vol", Arc::new(MemDevice::new(1 << 20)))
                .with_description("first volume")
                .with_multi_conn(true),
            Export::new("other", Arc::new(MemDevice::new(4096))),
        ]
    }

    /// Runs the server side of a handshake on one end of a duplex pipe.
    fn start(
        exports: Vec<Export<MemDevice>>,
        config: ServerConfig,
    ) -> (
        DuplexStream,
        tokio::task::JoinHandle<Result<Outcome, HandshakeError>>,
    ) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let task = tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(server);
            let mut wire = WireReader::new(r);
            negotiate(&mut wire, &mut w, &exports, &config, "test").await
        });
        (client, task)
    }

    async fn greet(client: &mut DuplexStream, flags: u32) {
        let mut greeting = [0u8; 18];
        client.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting[..16], b"NBDMAGICIHAVEOPT");
        assert_eq!(
            u16::from_be_bytes([greeting[16], greeting[17]]),
            FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES
        );
        client.write_all(&flags.to_be_bytes()).await.unwrap();
    }

    async fn send_option(client: &mut DuplexStream, option: u32, data: &[u8]) {
        let mut msg = Vec::new();
        msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
        msg.extend_from_slice(&option.to_be_bytes());
        msg.extend_from_slice(&len_u32(data.len()).to_be_bytes());
        msg.extend_from_slice(data);
        client.write_all(&msg).await.unwrap();
    }

    /// Reads one option reply: (option, type, data).
    async fn reply(client: &mut DuplexStream) -> (u32, u32, Vec<u8>) {
        let mut header = [0u8; 20];
        client.read_exact(&mut header).await.unwrap();
        assert_eq!(&header[..8], &OPTION_REPLY_MAGIC.to_be_bytes());
        let option = u32::from_be_bytes(header[8..12].try_into().unwrap());
        let kind = u32::from_be_bytes(header[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(header[16..20].try_into().unwrap());
        let mut data = vec![0; len as usize];
        client.read_exact(&mut data).await.unwrap();
        (option, kind, data)
    }

    fn info_data(name: &str, requests: &[u16]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&len_u32(name.len()).to_be_bytes());
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&u16::try_from(requests.len()).unwrap().to_be_bytes());
        for r in requests {
            d.extend_from_slice(&r.to_be_bytes());
        }
        d
    }

    fn meta_data(name: &str, queries: &[&str]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&len_u32(name.len()).to_be_bytes());
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&len_u32(queries.len()).to_be_bytes());
        for q in queries {
            d.extend_from_slice(&len_u32(q.len()).to_be_bytes());
            d.extend_from_slice(q.as_bytes());
        }
        d
    }

    #[tokio::test]
    async fn client_without_fixed_newstyle_is_refused() {
        let (mut client, task) = start(exports(), ServerConfig::default());
        greet(&mut client, 0).await;
        assert!(matches!(
            task.await.unwrap(),
            Err(HandshakeError::Refused(_))
        ));
    }

    #[tokio::test]
    async fn unknown_client_flags_are_refused() {
        let (mut client, task) = start(exports(), ServerConfig::default());
        greet(&mut client, FLAG_C_FIXED_NEWSTYLE | 0x80).await;
        assert!(matches!(
            task.await.unwrap(),
            Err(HandshakeError::Refused(_))
        ));
    }

    #[tokio::test]
    async fn export_name_enters_transmission_with_or_without_zeroes() {
        for (flags, expected_len) in [
            (FLAG_C_FIXED_NEWSTYLE, 134),
            (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES, 10),
        ] {
            let (mut client, task) = start(exports(), ServerConfig::default());
            greet(&mut client, flags).await;
            send_option(&mut client, OPT_EXPORT_NAME, b"other").await;
            let outcome = task.await.unwrap().unwrap();
            let Outcome::Transmission(n) = outcome else {
                panic!("expected transmission")
            };
            assert_eq!(n.export, 1);
            assert_eq!(n.size, 4096);
            assert_eq!(n.flags & FLAG_CAN_MULTI_CONN, 0);
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest.len(), expected_len);
            assert_eq!(&rest[..8], &4096u64.to_be_bytes());
        }
    }

    #[tokio::test]
    async fn unknown_export_name_closes_the_connection() {
        let (mut client, task) = start(exports(), ServerConfig::default());
        greet(&mut client, FLAG_C_FIXED_NEWSTYLE).await;
        send_option(&mut client, OPT_EXPORT_NAME, b"nope").await;
        assert!(matches!(
            task.await.unwrap(),
            Err(HandshakeError::Refused(_))
        ));
    }

    #[tokio::test]
    async fn list_info_and_go_negotiate_the_default_export() {
        let (mut client, task) = start(exports(), ServerConfig::default());
        greet(&mut client, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).await;

        send_option(&mut client, OPT_LIST, &[]).await;
        let (_, kind, data) = reply(&mut client).await;
        assert_eq!(kind, REP_SERVER);
        assert_eq!(&data[..4], &3u32.to_be_bytes());
        assert_eq!(&data[4..], b"volfirst volume");
        let (_, kind, data) = reply(&mut client).await;
        assert_eq!((kind, &data[4..]), (REP_SERVER, &b"other"[..]));
        assert_eq!(reply(&mut client).await.1, REP_ACK);

        send_option(&mut client, OPT_LIST, b"x").await;
        assert_eq!(reply(&mut client).await.1, REP_ERR_INVALID);

        send_option(&mut client, OPT_INFO, &info_data("missing", &[])).await;
        let (option, kind, message) = reply(&mut client).await;
        assert_eq!((option, kind), (OPT_INFO, REP_ERR_UNKNOWN));
        assert!(String::from_utf8(message).unwrap().contains("missing"));

        send_option(&mut client, OPT_INFO, &[0, 0, 0, 9]).await;
        assert_eq!(reply(&mut client).await.1, REP_ERR_INVALID);

        send_option(&mut client, OPT_STRUCTURED_REPLY, &[]).await;
        assert_eq!(reply(&mut client).await.1, REP_ACK);

        send_option(
            &mut client,
            OPT_GO,
            &info_data("", &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE]),
        )
        .await;
        let mut infos = Vec::new();
        loop {
            let (option, kind, data) = reply(&mut client).await;
            assert_eq!(option, OPT_GO);
            if kind == REP_ACK {
                break;
            }
            assert_eq!(kind, REP_INFO);
            infos.push(data);
        }
        let export = infos.iter().find(|d| d[..2] == [0, 0]).unwrap();
        assert_eq!(&export[2..10], &(1u64 << 20).to_be_bytes());
        let flags = u16::from_be_bytes([export[10], export[11]]);
        for f in [
            FLAG_HAS_FLAGS,
            FLAG_SEND_FLUSH,
            FLAG_SEND_FUA,
            FLAG_SEND_TRIM,
            FLAG_SEND_WRITE_ZEROES,
            FLAG_SEND_DF,
            FLAG_CAN_MULTI_CONN,
        ] {
            assert_ne!(flags & f, 0, "flag {f:#x} missing");
        }
        assert_eq!(flags & FLAG_READ_ONLY, 0);
        assert!(infos.iter().any(|d| d[..] == *b"\0\x01vol"));
        assert!(infos.iter().any(|d| d[..] == *b"\0\x02first volume"));
        let bs = infos.iter().find(|d| d[..2] == [0, 3]).unwrap();
        assert_eq!(&bs[2..], &[0, 0, 0, 1, 0, 0, 16, 0, 2, 0, 0, 0]);

        let Outcome::Transmission(n) = task.await.unwrap().unwrap() else {
            panic!("expected transmission")
        };
        assert_eq!(n.export, 0);
        assert!(n.structured);
        assert_eq!(n.base_allocation, None);
    }

    #[tokio::test]
    async fn meta_contexts_follow_the_spec() {
        let (mut client, task) = start(exports(), ServerConfig::default());
        greet(&mut client, FLAG_C_FIXED_NEWSTYLE).await;

        // Before structured replies: invalid.
        send_option(&mut client, OPT_SET_META_CONTEXT, &meta_data("vol", &[])).await;
        assert_eq!(reply(&mut client).await.1, REP_ERR_INVALID);
        send_option(&mut client, OPT_STRUCTURED_REPLY, &[]).await;
        assert_eq!(reply(&mut client).await.1, REP_ACK);

        // Listing with no query or with the `base:` wildcard names base:allocation.
        for queries in [&[][..], &["base:"][..]] {
            send_option(
                &mut client,
                OPT_LIST_META_CONTEXT,
                &meta_data("vol", queries),
            )
            .await;
            let (_, kind, data) = reply(&mut client).await;
            assert_eq!(kind, REP_META_CONTEXT);
            assert_eq!(&data[4..], BASE_ALLOCATION.as_bytes());
            assert_eq!(reply(&mut client).await.1, REP_ACK);
        }

        // Unknown namespaces and leaves are ignored; a query without a colon is invalid.
        send_option(
            &mut client,
            OPT_SET_META_CONTEXT,
            &meta_data("vol", &["qemu:dirty-bitmap:b", "base:nothing", "base:"]),
        )
        .await;
        assert_eq!(reply(&mut client).await.1, REP_ACK);
        send_option(
            &mut client,
            OPT_SET_META_CONTEXT,
            &meta_data("vol", &["nocolon"]),
        )
        .await;
        assert_eq!(reply(&mut client).await.1, REP_ERR_INVALID);
        send_option(
            &mut client,
            OPT_SET_META_CONTEXT,
            &meta_data("ghost", &[BASE_ALLOCATION]),
        )
        .await;
        assert_eq!(reply(&mut client).await.1, REP_ERR_UNKNOWN);

        // Selecting base:allocation gives it a non-zero id that transmission uses.
        send_option(
            &mut client,
            OPT_SET_META_CONTEXT,
            &meta_data("vol", &["x-foo:bar", BASE_ALLOCATION]),
        )
        .await;
        let (_, kind, data) = reply(&mut client).await;
        assert_eq!(kind, REP_META_CONTEXT);
        assert_eq!(&data[..4], &BASE_ALLOCATION_ID.to_be_bytes());
        assert_eq!(reply(&mut client).await.1, REP_ACK);

        send_option(&mut client, OPT_GO, &info_data("vol", &[])).await;
        while reply(&mut client).await.1 != REP_ACK {}
        let Outcome::Transmission(n) = task.await.unwrap().unwrap() else {
            panic!("expected transmission")
        };
        assert_eq!(n.base_allocation, Some(BASE_ALLOCATION_ID));
    }

    #[tokio::test]
    async fn contexts_selected_for_another_export_are_dropped_at_go() {
        let (mut client, task) = start(exports(), ServerConfig::default());
        greet(&mut client, FLAG_C_FIXED_NEWSTYLE).await;
        send_option(&mut client, OPT_STRUCTURED_REPLY, &[]).await;
        reply(&mut client).await;
        send_option(
            &mut client,
            OPT_SET_META_CONTEXT,
            &meta_data("vol", &[BASE_ALLOCATION]),
        )
        .await;
        while reply(&mut client).await.1 != REP_ACK {}
        send_option(&mut client, OPT_GO, &info_data("other", &[])).await;
        while reply(&mut client).await.1 != REP_ACK {}
        let Outcome::Transmission(n) = task.await.unwrap().unwrap() else {
            panic!("expected transmission")
        };
        assert_eq!((n.export, n.base_allocation), (1, None));
    }

    #[tokio::test]
    async fn unknown_and_oversized_options_get_errors_and_abort_is_acked() {
        let (mut client, task) = start(exports(), ServerConfig::default());
        greet(&mut client, FLAG_C_FIXED_NEWSTYLE).await;
        send_option(&mut client, OPT_STARTTLS, &[]).await;
        assert_eq!(reply(&mut client).await.1, REP_ERR_UNSUP);
        send_option(&mut client, 0xdead, b"whatever").await;
        assert_eq!(reply(&mut client).await.1, REP_ERR_UNSUP);
        send_option(&mut client, OPT_INFO, &vec![0; 100_000]).await;
        assert_eq!(reply(&mut client).await.1, REP_ERR_TOO_BIG);
        send_option(&mut client, OPT_ABORT, &[]).await;
        assert_eq!(reply(&mut client).await.1, REP_ACK);
        assert!(matches!(task.await.unwrap(), Ok(Outcome::Aborted)));
    }

    #[tokio::test]
    async fn huge_option_lengths_and_bad_magic_close_the_connection() {
        let (mut client, task) = start(exports(), ServerConfig::default());
        greet(&mut client, FLAG_C_FIXED_NEWSTYLE).await;
        let mut msg = Vec::new();
        msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
        msg.extend_from_slice(&OPT_GO.to_be_bytes());
        msg.extend_from_slice(&u32::MAX.to_be_bytes());
        client.write_all(&msg).await.unwrap();
        assert!(matches!(
            task.await.unwrap(),
            Err(HandshakeError::Refused(_))
        ));

        let (mut client, task) = start(exports(), ServerConfig::default());
        greet(&mut client, FLAG_C_FIXED_NEWSTYLE).await;
        client.write_all(&[0x55; 16]).await.unwrap();
        assert!(matches!(
            task.await.unwrap(),
            Err(HandshakeError::Refused(_))
        ));
    }

    #[tokio::test]
    async fn option_count_is_bounded() {
        let config = ServerConfig {
            max_options: 3,
            ..ServerConfig::default()
        };
        let (mut client, task) = start(exports(), config);
        greet(&mut client, FLAG_C_FIXED_NEWSTYLE).await;
        for _ in 0..3 {
            send_option(&mut client, OPT_LIST, &[]).await;
            while reply(&mut client).await.1 != REP_ACK {}
        }
        send_option(&mut client, OPT_LIST, &[]).await;
        assert!(matches!(
            task.await.unwrap(),
            Err(HandshakeError::Refused(_))
        ));
    }

    #[tokio::test]
    async fn truncated_handshake_is_an_io_error() {
        let (mut client, task) = start(exports(), ServerConfig::default());
        greet(&mut client, FLAG_C_FIXED_NEWSTYLE).await;
        client.write_all(b"IHAVE").await.unwrap();
        drop(client);
        assert!(matches!(task.await.unwrap(), Err(HandshakeError::Io(_))));
    }
}
