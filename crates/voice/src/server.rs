//! The tokio shell around [`Sfu`]: one UDP socket, one task, commands in and events out over
//! channels, so the SFU itself needs no locks.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::sfu::{Flags, ParticipantId, Sfu, SfuStats, VoiceError, VoiceEvent};

/// Socket buffers big enough that a few hundred participants on a shared 20 ms beat do not
/// overflow them (the kernel default drops packets at about 200).
const SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// Datagrams read in one go before the SFU is polled again.
const READ_BATCH: usize = 64;

#[derive(Debug, Clone, Copy)]
pub struct VoiceConfig {
    /// The UDP address to bind. An unspecified IP binds every interface.
    pub listen: SocketAddr,
    /// The IP clients are told to send to; by default the bound IP or, when that is
    /// unspecified, the IP of the interface holding the default route.
    pub announce: Option<IpAddr>,
}

enum Command {
    Offer {
        id: ParticipantId,
        room: String,
        flags: Flags,
        sdp: String,
        reply: oneshot::Sender<Result<String, VoiceError>>,
    },
    Flags(ParticipantId, Flags),
    Move(ParticipantId, String),
    Leave(ParticipantId),
    Stats(oneshot::Sender<SfuStats>),
}

/// A handle to the running SFU; cloning it is cheap. The SFU stops when every handle is gone.
#[derive(Clone)]
pub struct Voice {
    commands: mpsc::UnboundedSender<Command>,
    address: SocketAddr,
}

impl Voice {
    /// Binds the socket and starts the SFU task. Events come out of the returned receiver.
    pub fn start(config: VoiceConfig) -> io::Result<(Voice, mpsc::UnboundedReceiver<VoiceEvent>)> {
        let socket = bind(config.listen)?;
        let bound = socket.local_addr()?;
        let ip = match config.announce {
            Some(ip) => ip,
            None if bound.ip().is_unspecified() => {
                default_route_ip().unwrap_or(Ipv4Addr::LOCALHOST.into())
            }
            None => bound.ip(),
        };
        let address = SocketAddr::new(ip, bound.port());
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(run(socket, address, command_rx, event_tx));
        tracing::info!(%address, "voice listening (UDP)");
        Ok((Voice { commands, address }, events))
    }

    /// Where clients send media.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Answers an offer (see [`Sfu::offer`]).
    pub async fn offer(
        &self,
        id: ParticipantId,
        room: &str,
        flags: Flags,
        sdp: String,
    ) -> Result<String, VoiceError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Offer {
                id,
                room: room.to_owned(),
                flags,
                sdp,
                reply,
            })
            .map_err(|_| VoiceError::Stopped)?;
        answer.await.map_err(|_| VoiceError::Stopped)?
    }

    pub fn set_flags(&self, id: ParticipantId, flags: Flags) {
        let _ = self.commands.send(Command::Flags(id, flags));
    }

    pub fn move_to(&self, id: ParticipantId, room: &str) {
        let _ = self.commands.send(Command::Move(id, room.to_owned()));
    }

    pub fn leave(&self, id: ParticipantId) {
        let _ = self.commands.send(Command::Leave(id));
    }

    pub async fn stats(&self) -> Result<SfuStats, VoiceError> {
        let (reply, stats) = oneshot::channel();
        self.commands
            .send(Command::Stats(reply))
            .map_err(|_| VoiceError::Stopped)?;
        stats.await.map_err(|_| VoiceError::Stopped)
    }
}

fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// The local IP of the default route, found without sending anything: connecting a UDP socket
/// only picks a route.
fn default_route_ip() -> Option<IpAddr> {
    let probe = StdUdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    probe.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    Some(probe.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

async fn run(
    socket: UdpSocket,
    address: SocketAddr,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<VoiceEvent>,
) {
    let mut sfu = Sfu::new(vec![address]);
    let mut buf = vec![0u8; 2048];
    loop {
        let next = sfu.poll(Instant::now(), &mut |transmit| {
            // UDP may drop; a full send buffer is the same as a lost packet.
            let _ = socket.try_send_to(&transmit.contents, transmit.destination);
        });
        for event in sfu.take_events() {
            let _ = events.send(event);
        }
        tokio::select! {
            biased;
            command = commands.recv() => {
                let Some(command) = command else { break };
                match command {
                    Command::Offer { id, room, flags, sdp, reply } => {
                        let _ = reply.send(sfu.offer(id, &room, flags, &sdp, Instant::now()));
                    }
                    Command::Flags(id, flags) => sfu.set_flags(id, flags),
                    Command::Move(id, room) => sfu.move_to(id, &room),
                    Command::Leave(id) => sfu.leave(id),
                    Command::Stats(reply) => {
                        let _ = reply.send(sfu.stats());
                    }
                }
            }
            received = socket.recv_from(&mut buf) => {
                // The destination is always the announced address: it is the only candidate.
                if let Ok((n, source)) = received {
                    sfu.receive(Instant::now(), source, address, &buf[..n]);
                }
                for _ in 1..READ_BATCH {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, source)) => sfu.receive(Instant::now(), source, address, &buf[..n]),
                        Err(_) => break,
                    }
                }
            }
            () = tokio::time::sleep_until(next.into()) => {}
        }
    }
}
