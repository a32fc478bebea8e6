//! Scripts, as Redis runs them: the script's text in a Lua 5.1 interpreter (`mlua`, vendored Lua
//! 5.1, the version Redis embeds), with `KEYS` and `ARGV` set and `redis.call` / `redis.pcall`
//! running the host's own commands ([`super::commands`]). So the simulator exercises the
//! registry's production scripts byte for byte, and the host holds no copy of their meaning.
//!
//! The conversions are Redis's: a Lua number argument becomes its decimal text; an integer reply
//! becomes a number, a bulk string a string, nil `false`, an array a table, a status `{ok = ..}`
//! and an error `{err = ..}` (raised by `redis.call`, returned by `redis.pcall`). Back from the
//! script: a number is an integer reply (truncated), a string a bulk string, `false` and `nil`
//! nil, `true` the integer 1, a table with `err` or `ok` an error or a status, any other table
//! an array of its elements up to the first nil. Redis 7 passes an error raised by `redis.call`
//! on with the call's own code (`-WRONGTYPE ... script: <sha>, ...`); a Lua error is `-ERR`.
//!
//! One interpreter per thread, reused: a script is compiled once per thread (by SHA-1), and its
//! run leaves nothing behind but `KEYS` and `ARGV`, which the next run replaces. Lua 5.1 has no
//! string-hash seed, and the scripts use no randomness, so runs replay.

use std::cell::RefCell;
use std::collections::HashMap;

use mlua::{Function, Lua, MultiValue, Table, Value};

use super::commands::Running;
use super::resp::Reply;
use super::RedisState;
use crate::witness::Witness;

/// The error a `redis.call` raises: the command's error reply.
#[derive(Debug)]
struct CallError(String);

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CallError {}

/// The interpreter of this thread, its `redis` table, and the scripts compiled so far.
struct Engine {
    lua: Lua,
    redis: Table,
    compiled: RefCell<HashMap<String, Function>>,
}

impl Engine {
    fn new() -> mlua::Result<Engine> {
        let lua = Lua::new();
        let redis = lua.create_table()?;
        lua.globals().raw_set("redis", &redis)?;
        Ok(Engine { lua, redis, compiled: RefCell::new(HashMap::new()) })
    }

    fn function(&self, sha: &str, body: &[u8]) -> mlua::Result<Function> {
        if let Some(f) = self.compiled.borrow().get(sha) {
            return Ok(f.clone());
        }
        // Redis names the chunk `@user_script`, so messages read `user_script:<line>: ...`.
        let f = self.lua.load(body).set_name("@user_script").into_function()?;
        self.compiled.borrow_mut().insert(sha.to_owned(), f.clone());
        Ok(f)
    }
}

thread_local! {
    static ENGINE: Engine = Engine::new().expect("a Lua 5.1 interpreter starts");
}

/// Runs the script `body` (whose SHA-1 is `sha`) on `state`, as `running` describes the call.
pub(crate) fn run(
    state: &mut RedisState,
    w: &dyn Witness,
    sha: &str,
    body: &[u8],
    running: &Running<'_>,
) -> Reply {
    ENGINE.with(|engine| {
        let f = match engine.function(sha, body) {
            Ok(f) => f,
            Err(e) => {
                return Reply::Err(format!("ERR Error compiling script (new function): {}", first_line(&e)))
            }
        };
        match call(engine, &f, state, w, running) {
            Ok(reply) => reply,
            Err(e) => match call_error(&e) {
                Some(msg) => Reply::Err(format!("{msg} script: {sha}, on @user_script.")),
                None => Reply::Err(format!("ERR Error running script (call to f_{sha}): {}", first_line(&e))),
            },
        }
    })
}

fn call(
    engine: &Engine,
    f: &Function,
    state: &mut RedisState,
    w: &dyn Witness,
    running: &Running<'_>,
) -> mlua::Result<Reply> {
    let lua = &engine.lua;
    let state = RefCell::new(state);
    let globals = lua.globals();
    globals.raw_set("KEYS", strings(lua, running.keys)?)?;
    globals.raw_set("ARGV", strings(lua, running.args)?)?;
    lua.scope(|scope| {
        let call = scope.create_function(|lua, args: MultiValue| {
            match command(&mut state.borrow_mut(), w, running, args) {
                Reply::Err(msg) => Err(mlua::Error::external(CallError(msg))),
                reply => to_lua(lua, &reply),
            }
        })?;
        let pcall = scope.create_function(|lua, args: MultiValue| {
            to_lua(lua, &command(&mut state.borrow_mut(), w, running, args))
        })?;
        engine.redis.raw_set("call", call)?;
        engine.redis.raw_set("pcall", pcall)?;
        let out: MultiValue = f.call(())?;
        Ok(from_lua(out.into_iter().next().unwrap_or(Value::Nil)))
    })
}

/// One `redis.call` / `redis.pcall`: its arguments as Redis converts them, then the command.
fn command(state: &mut RedisState, w: &dyn Witness, running: &Running<'_>, args: MultiValue) -> Reply {
    let mut argv = Vec::with_capacity(args.len());
    for v in args {
        match v {
            Value::String(s) => argv.push(s.as_bytes().to_vec()),
            Value::Number(n) => argv.push(number_text(n).into_bytes()),
            Value::Integer(n) => argv.push(n.to_string().into_bytes()),
            _ => return Reply::Err("ERR Lua redis lib command arguments must be strings or integers".into()),
        }
    }
    if argv.is_empty() {
        return Reply::Err("ERR Please specify at least one argument for this redis lib call".into());
    }
    let name = String::from_utf8_lossy(&argv[0]).to_ascii_uppercase();
    state.dispatch(w, running.peer, Some(running), &name, &argv)
}

/// A Lua number as Redis passes it to a command (`%.17g`): integers in full, without exponent.
fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e17 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn strings(lua: &Lua, items: &[Vec<u8>]) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(items.len(), 0)?;
    for (i, item) in items.iter().enumerate() {
        t.raw_set(i + 1, lua.create_string(item)?)?;
    }
    Ok(t)
}

/// A reply as a script sees it.
fn to_lua(lua: &Lua, reply: &Reply) -> mlua::Result<Value> {
    Ok(match reply {
        Reply::Int(n) => Value::Number(*n as f64),
        Reply::Bulk(None) => Value::Boolean(false),
        Reply::Bulk(Some(b)) => Value::String(lua.create_string(b)?),
        Reply::Status(s) => {
            let t = lua.create_table()?;
            t.raw_set("ok", s.as_str())?;
            Value::Table(t)
        }
        Reply::Err(s) => {
            let t = lua.create_table()?;
            t.raw_set("err", s.as_str())?;
            Value::Table(t)
        }
        Reply::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
    })
}

/// A script's result as a reply.
fn from_lua(v: Value) -> Reply {
    match v {
        Value::Boolean(true) => Reply::Int(1),
        Value::Number(n) => Reply::Int(n as i64),
        Value::Integer(n) => Reply::Int(n),
        Value::String(s) => Reply::Bulk(Some(s.as_bytes().to_vec())),
        Value::Table(t) => {
            if let Ok(Value::String(e)) = t.raw_get::<Value>("err") {
                return Reply::Err(e.to_string_lossy().to_string());
            }
            if let Ok(Value::String(s)) = t.raw_get::<Value>("ok") {
                return Reply::Status(s.to_string_lossy().to_string());
            }
            let mut items = Vec::new();
            for i in 1.. {
                match t.raw_get::<Value>(i) {
                    Ok(Value::Nil) | Err(_) => break,
                    Ok(v) => items.push(from_lua(v)),
                }
            }
            Reply::Array(items)
        }
        _ => Reply::Bulk(None),
    }
}

/// The error reply a `redis.call` raised, if that is what ended the script.
fn call_error(e: &mlua::Error) -> Option<&str> {
    match e {
        mlua::Error::CallbackError { cause, .. } => call_error(cause),
        mlua::Error::ExternalError(ext) => ext.downcast_ref::<CallError>().map(|c| c.0.as_str()),
        _ => None,
    }
}

/// An error's first line (a reply is one line).
fn first_line(e: &mlua::Error) -> String {
    e.to_string().lines().next().unwrap_or("").to_owned()
}
