//! A terminal chat client: log in (or register), pick or join a guild, then type lines to send
//! them and see everyone's messages as they arrive; `/dm NAME text` sends an encrypted DM.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use guildhall_client::dm::{DmKeyring, DmPayload, UserId, pair_conversation};
use guildhall_client::{Client, ClientError, Gateway, Page};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
#[command(name = "chat", about = "Chat on a guildhall node from the terminal")]
struct Args {
    /// The node's address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    #[arg(long)]
    user: String,
    #[arg(long, env = "GUILDHALL_PASSWORD")]
    password: String,
    /// Create the account first.
    #[arg(long)]
    register: bool,
    /// Create a guild with this name and print an invite code for it.
    #[arg(long)]
    create_guild: Option<String>,
    /// Join a guild with an invite code.
    #[arg(long)]
    join: Option<String>,
    /// Where your DM secrets are kept (created on first use; only you can read it).
    #[arg(long)]
    dm_keyring: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Args::parse()).await {
        eprintln!("chat: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), ClientError> {
    let (client, me) = if args.register {
        Client::register(&args.server, &args.user, &args.password).await?
    } else {
        Client::login(&args.server, &args.user, &args.password).await?
    };
    let guild = match (&args.create_guild, &args.join) {
        (Some(name), _) => {
            let guild = client.create_guild(name).await?;
            let invite = client.create_invite(&guild.id, 0, 0).await?;
            println!("created {name}; others join with: --join {}", invite.code);
            guild
        }
        (None, Some(code)) => client.accept_invite(code).await?,
        (None, None) => client.guilds().await?.into_iter().next().ok_or_else(|| {
            ClientError::Gateway("you are in no guild: use --create-guild or --join".into())
        })?,
    };
    let channel = guild
        .first_text_channel()
        .ok_or_else(|| ClientError::Gateway("the guild has no text channel".into()))?
        .clone();
    println!(
        "{} in {} #{}; type to chat, Ctrl-D to quit",
        me.username, guild.name, channel.name
    );
    let recent = Page {
        limit: Some(20),
        ..Page::default()
    };
    for m in client.messages(&guild.id, &channel.id, &recent).await? {
        println!("[{}] {}", who(&m.author_id, &me.id), m.content);
    }
    let keyring_path = args
        .dm_keyring
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("guildhall-chat-{}.keys", args.user)));
    let keyring = open_keyring(&client, &keyring_path, &args.password).await?;
    let mut gateway = Gateway::connect(&client).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut sent = 0u64;
    let mut heartbeat = tokio::time::interval(gateway.heartbeat_interval / 2);
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(text)) if text.starts_with("/dm ") => {
                    if let Err(e) = send_dm(&client, &keyring, &guild.id, &text).await {
                        eprintln!("DM not sent: {e}");
                    }
                }
                Ok(Some(text)) if !text.trim().is_empty() => {
                    sent += 1;
                    let nonce = format!("{}-{sent}", std::process::id());
                    if let Err(e) = gateway.send_message(&guild.id, &channel.id, &text, &nonce).await {
                        eprintln!("not sent: {e}");
                    }
                }
                Ok(Some(_)) => {}
                _ => return Ok(()),
            },
            _ = heartbeat.tick() => gateway.heartbeat().await?,
            dispatch = gateway.next_dispatch(Duration::from_secs(3600)) => {
                let dispatch = match dispatch {
                    Ok(d) => d,
                    Err(ClientError::Timeout(_)) => continue,
                    Err(_) => {
                        gateway.reconnect().await?;
                        continue;
                    }
                };
                if dispatch.name == "DM_CREATE" {
                    match client.open_dm_dispatch(&keyring, &dispatch.data).await {
                        Ok(dm) if dm.sender.to_string() != me.id => {
                            if let DmPayload::Message { content, .. } = dm.payload {
                                println!("[dm from {}] {content}", who(&dm.sender.to_string(), &me.id));
                            }
                        }
                        Ok(_) => {}
                        Err(e) => eprintln!("a DM could not be opened: {e}"),
                    }
                }
                if dispatch.name == "MESSAGE_CREATE" && dispatch.data["channel_id"] == channel.id.as_str() {
                    let author = dispatch.data["author_id"].as_str().unwrap_or_default();
                    println!("[{}] {}", who(author, &me.id), dispatch.data["content"].as_str().unwrap_or_default());
                }
            }
        }
    }
}

/// The keyring at `path`, or a new one (from the identity key the node exports) saved there;
/// its DM key is published either way.
async fn open_keyring(
    client: &Client,
    path: &std::path::Path,
    password: &str,
) -> Result<DmKeyring, ClientError> {
    let keyring = if path.exists() {
        DmKeyring::load(path)?
    } else {
        let keyring = DmKeyring::new(&client.export_key(password).await?)?;
        keyring.save(path)?;
        keyring
    };
    client.publish_dm_key(&keyring).await?;
    Ok(keyring)
}

/// `/dm NAME text`: an encrypted DM to the member of the guild named NAME.
async fn send_dm(
    client: &Client,
    keyring: &DmKeyring,
    guild: &str,
    line: &str,
) -> Result<(), ClientError> {
    let (name, text) = line["/dm ".len()..]
        .trim()
        .split_once(' ')
        .ok_or_else(|| ClientError::Dm("usage: /dm NAME text".into()))?;
    let member = client
        .members(guild)
        .await?
        .into_iter()
        .find(|m| m["username"] == name)
        .and_then(|m| m["user_id"].as_str()?.parse::<UserId>().ok())
        .ok_or_else(|| ClientError::Dm(format!("no member named {name} in this guild")))?;
    let payload = DmPayload::Message {
        content: text.to_owned(),
        reply_to: None,
    };
    let conversation = pair_conversation(&keyring.user(), &member);
    client
        .send_dm(keyring, conversation, &[member], &payload)
        .await?;
    Ok(())
}

/// A short name for a message's author: "you", or the start of their user id.
fn who<'a>(author: &'a str, me: &str) -> &'a str {
    if author == me {
        "you"
    } else {
        &author[..author.len().min(8)]
    }
}
