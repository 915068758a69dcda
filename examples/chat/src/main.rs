//! A terminal chat client: log in (or register), pick or join a guild, then type lines to send
//! them and see everyone's messages as they arrive.

use std::time::Duration;

use clap::Parser;
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
    let mut gateway = Gateway::connect(&client).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut sent = 0u64;
    let mut heartbeat = tokio::time::interval(gateway.heartbeat_interval / 2);
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
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
                if dispatch.name == "MESSAGE_CREATE" && dispatch.data["channel_id"] == channel.id.as_str() {
                    let author = dispatch.data["author_id"].as_str().unwrap_or_default();
                    println!("[{}] {}", who(author, &me.id), dispatch.data["content"].as_str().unwrap_or_default());
                }
            }
        }
    }
}

/// A short name for a message's author: "you", or the start of their user id.
fn who<'a>(author: &'a str, me: &str) -> &'a str {
    if author == me {
        "you"
    } else {
        &author[..author.len().min(8)]
    }
}
