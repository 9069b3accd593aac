// Test-only oracle: drives Signal's @signalapp/libsignal-client (pinned at
// 0.90.0, AGPL-3.0) so that Magpie's Go tests can check byte compatibility.
// It is never linked into the Go module; Go talks to it only through
// internal/libsignaloracle, over this process's stdin and stdout.
//
// Protocol: one JSON request per line on stdin, one JSON response per line on
// stdout, in order. Binary values are standard base64 strings.
//
//   request:  {"id": 7, "cmd": "encrypt", ...arguments}
//   response: {"id": 7, "ok": true, ...results}
//         or  {"id": 7, "ok": false, "error": "message", "kind": "InvalidMessage"}
//
// "kind" is libsignal's error name (an ErrorCode name such as
// "UntrustedIdentity", or "LibSignalError" for the generic code) or the
// JavaScript error's name. Nothing else is written to stdout, and nothing
// secret is ever written to stderr. The process exits when stdin closes.
//
// Commands (see internal/libsignaloracle for the typed Go side):
//   newParty        {name, deviceId, registrationId, identityPrivate?}
//                   -> {identityKey, identityPrivate}
//   newPartyWithIdentity  the same, with identityPrivate required
//   bundle          {name, withOneTimePreKey} -> a PreKeyBundle's public parts
//   processBundle   {name, peer: {name, deviceId}, bundle} -> {}
//   encrypt         {name, peer, plaintext} -> {type, body}
//   decrypt         {name, peer, type, body} -> {plaintext}
//   inspect         {type, body} -> parsed header fields of a message
//   preKeyState     {name} -> {preKeyIds, kyberUsed}
//   fingerprint     {localId, localKey, remoteId, remoteKey, iterations, version}
//                   -> {displayable, scannable}
//   sign            {privateKey, message} -> {signature}
//   verify          {publicKey, message, signature} -> {valid}
//   kemGenerate     {} -> {publicKey, secretKey}
//   kemCheck        {publicKey?, secretKey?} -> the same keys, reserialized
//
// Sender Keys (the group cipher). A distribution id is a UUID string; each
// party keeps its sender key records, serialized, per (sender, id):
//   skdmCreate      {name, distributionId} -> {body}
//                   SenderKeyDistributionMessage.create for the party itself
//   skdmProcess     {name, sender: {name, deviceId}, body} -> {}
//   skdmInspect     {body} -> {distributionId, chainId, iteration, chainKey}
//   skdmNew         {distributionId, chainId, iteration, chainKey, signingKey}
//                   -> {body}  (SenderKeyDistributionMessage._new, version 3)
//   groupEncrypt    {name, distributionId, plaintext} -> {type, body}
//   groupDecrypt    {name, sender, body} -> {plaintext}
//   skmInspect      {body, signingKey?} -> {distributionId, chainId, iteration,
//                   ciphertext, signatureValid (null without signingKey)}
//   skmNew          {distributionId, chainId, iteration, ciphertext, privateKey}
//                   -> {body}  (SenderKeyMessage._new, version 3)
//   senderKeyRecord {name, sender, distributionId} -> {record} (null if none)
//   setSenderKeyRecord {name, sender, distributionId, record} -> {}

import * as readline from 'node:readline';
import * as SignalClient from '@signalapp/libsignal-client';

const {
  CiphertextMessageType,
  ErrorCode,
  Fingerprint,
  IdentityChange,
  IdentityKeyPair,
  KEMKeyPair,
  KEMPublicKey,
  KEMSecretKey,
  KyberPreKeyRecord,
  PreKeyBundle,
  PreKeyRecord,
  PreKeySignalMessage,
  PrivateKey,
  ProtocolAddress,
  PublicKey,
  SenderKeyDistributionMessage,
  SenderKeyMessage,
  SenderKeyRecord,
  SignalMessage,
  SignedPreKeyRecord,
} = SignalClient;

// ---- binary helpers ----

const b64 = (bytes) => Buffer.from(bytes).toString('base64');

// fromB64 returns a Uint8Array that owns its ArrayBuffer (Buffer.from may
// return a view into Node's shared pool).
function fromB64(s, what) {
  if (typeof s !== 'string') throw new TypeError(`${what}: expected base64 string`);
  return new Uint8Array(Buffer.from(s, 'base64'));
}

// ---- in-memory stores, one set per party ----

class MemIdentityStore extends SignalClient.IdentityKeyStore {
  constructor(identity, registrationId) {
    super();
    this.identity = identity; // IdentityKeyPair
    this.registrationId = registrationId;
    this.known = new Map(); // address string -> PublicKey
  }
  async getIdentityKey() { return this.identity.privateKey; }
  async getLocalRegistrationId() { return this.registrationId; }
  async saveIdentity(address, key) {
    const old = this.known.get(address.toString());
    this.known.set(address.toString(), key);
    return old && !old.equals(key) ? IdentityChange.ReplacedExisting : IdentityChange.NewOrUnchanged;
  }
  // Trust on first use, like a client before the user has verified anything.
  async isTrustedIdentity(address, key, _direction) {
    const old = this.known.get(address.toString());
    return old === undefined || old.equals(key);
  }
  async getIdentity(address) { return this.known.get(address.toString()) ?? null; }
}

class MemSessionStore extends SignalClient.SessionStore {
  constructor() { super(); this.sessions = new Map(); }
  async saveSession(address, record) {
    // Store serialized, as a real client would: this also checks that every
    // state libsignal produces survives a round trip.
    this.sessions.set(address.toString(), record.serialize());
  }
  async getSession(address) {
    const s = this.sessions.get(address.toString());
    return s ? SignalClient.SessionRecord.deserialize(s) : null;
  }
  async getExistingSessions(addresses) {
    const out = [];
    for (const a of addresses) {
      const r = await this.getSession(a);
      if (!r) throw new Error(`no session for ${a.toString()}`);
      out.push(r);
    }
    return out;
  }
}

class MemPreKeyStore extends SignalClient.PreKeyStore {
  constructor() { super(); this.keys = new Map(); }
  async savePreKey(id, record) { this.keys.set(id, record); }
  async getPreKey(id) {
    const r = this.keys.get(id);
    if (!r) throw new Error(`no one-time prekey ${id}`);
    return r;
  }
  async removePreKey(id) { this.keys.delete(id); }
}

class MemSignedPreKeyStore extends SignalClient.SignedPreKeyStore {
  constructor() { super(); this.keys = new Map(); }
  async saveSignedPreKey(id, record) { this.keys.set(id, record); }
  async getSignedPreKey(id) {
    const r = this.keys.get(id);
    if (!r) throw new Error(`no signed prekey ${id}`);
    return r;
  }
}

class MemKyberPreKeyStore extends SignalClient.KyberPreKeyStore {
  constructor() { super(); this.keys = new Map(); this.used = []; }
  async saveKyberPreKey(id, record) { this.keys.set(id, record); }
  async getKyberPreKey(id) {
    const r = this.keys.get(id);
    if (!r) throw new Error(`no kyber prekey ${id}`);
    return r;
  }
  // Kyber prekeys here are last-resort keys: kept, but each use is recorded.
  async markKyberPreKeyUsed(id, signedPreKeyId, _baseKey) {
    this.used.push({ kyberPreKeyId: id, signedPreKeyId });
  }
}

class MemSenderKeyStore extends SignalClient.SenderKeyStore {
  constructor() { super(); this.records = new Map(); }
  static key(sender, distributionId) { return `${sender.toString()}/${distributionId}`; }
  async saveSenderKey(sender, distributionId, record) {
    // Serialized, like the sessions: every record libsignal writes is also
    // read back from its storage form.
    this.records.set(MemSenderKeyStore.key(sender, distributionId), record.serialize());
  }
  async getSenderKey(sender, distributionId) {
    const r = this.records.get(MemSenderKeyStore.key(sender, distributionId));
    return r ? SenderKeyRecord.deserialize(r) : null;
  }
}

// ---- parties ----

const parties = new Map(); // name -> party

function party(name) {
  const p = parties.get(name);
  if (!p) throw new Error(`unknown party ${JSON.stringify(name)}`);
  return p;
}

function address(peer) {
  if (!peer || typeof peer.name !== 'string') throw new TypeError('peer: expected {name, deviceId}');
  return ProtocolAddress.new(peer.name, peer.deviceId ?? 1);
}

function newParty({ name, deviceId = 1, registrationId, identityPrivate }) {
  if (typeof name !== 'string' || name === '') throw new TypeError('name required');
  if (parties.has(name)) throw new Error(`party ${name} exists`);
  if (!Number.isInteger(registrationId)) throw new TypeError('registrationId required');
  let identity;
  if (identityPrivate !== undefined) {
    const priv = PrivateKey.deserialize(fromB64(identityPrivate, 'identityPrivate'));
    identity = new IdentityKeyPair(priv.getPublicKey(), priv);
  } else {
    identity = IdentityKeyPair.generate();
  }
  parties.set(name, {
    name, deviceId, registrationId, identity,
    identityStore: new MemIdentityStore(identity, registrationId),
    sessions: new MemSessionStore(),
    preKeys: new MemPreKeyStore(),
    signedPreKeys: new MemSignedPreKeyStore(),
    kyberPreKeys: new MemKyberPreKeyStore(),
    senderKeys: new MemSenderKeyStore(),
    nextId: 1,
  });
  return {
    identityKey: b64(identity.publicKey.serialize()),
    identityPrivate: b64(identity.privateKey.serialize()),
  };
}

// bundle makes fresh prekeys for a party, stores their private halves, and
// returns what a server would hand to a peer.
async function bundle({ name, withOneTimePreKey = true }) {
  const p = party(name);
  const now = Date.now();

  const signedId = p.nextId++;
  const signedPriv = PrivateKey.generate();
  const signedPub = signedPriv.getPublicKey();
  const signedSig = p.identity.privateKey.sign(signedPub.serialize());
  await p.signedPreKeys.saveSignedPreKey(signedId,
    SignedPreKeyRecord.new(signedId, now, signedPub, signedPriv, signedSig));

  const kyberId = p.nextId++;
  const kyberPair = KEMKeyPair.generate();
  const kyberPub = kyberPair.getPublicKey();
  const kyberSig = p.identity.privateKey.sign(kyberPub.serialize());
  await p.kyberPreKeys.saveKyberPreKey(kyberId,
    KyberPreKeyRecord.new(kyberId, now, kyberPair, kyberSig));

  const out = {
    registrationId: p.registrationId,
    deviceId: p.deviceId,
    identityKey: b64(p.identity.publicKey.serialize()),
    signedPreKeyId: signedId,
    signedPreKey: b64(signedPub.serialize()),
    signedPreKeySignature: b64(signedSig),
    kyberPreKeyId: kyberId,
    kyberPreKey: b64(kyberPub.serialize()),
    kyberPreKeySignature: b64(kyberSig),
    preKeyId: null,
    preKey: null,
  };
  if (withOneTimePreKey) {
    const id = p.nextId++;
    const priv = PrivateKey.generate();
    await p.preKeys.savePreKey(id, PreKeyRecord.new(id, priv.getPublicKey(), priv));
    out.preKeyId = id;
    out.preKey = b64(priv.getPublicKey().serialize());
  }
  return out;
}

async function processBundle({ name, peer, bundle: b }) {
  const p = party(name);
  const hasPreKey = b.preKeyId !== null && b.preKeyId !== undefined;
  const pb = PreKeyBundle.new(
    b.registrationId, b.deviceId,
    hasPreKey ? b.preKeyId : null,
    hasPreKey ? PublicKey.deserialize(fromB64(b.preKey, 'preKey')) : null,
    b.signedPreKeyId,
    PublicKey.deserialize(fromB64(b.signedPreKey, 'signedPreKey')),
    fromB64(b.signedPreKeySignature, 'signedPreKeySignature'),
    PublicKey.deserialize(fromB64(b.identityKey, 'identityKey')),
    b.kyberPreKeyId,
    KEMPublicKey.deserialize(fromB64(b.kyberPreKey, 'kyberPreKey')),
    fromB64(b.kyberPreKeySignature, 'kyberPreKeySignature'),
  );
  // 0.90.0 takes no post-quantum-ratchet option: SPQR is always offered,
  // and falls back to none when the peer's replies carry no pq_ratchet.
  await SignalClient.processPreKeyBundle(pb, address(peer), p.sessions, p.identityStore);
  return {};
}

async function encrypt({ name, peer, plaintext }) {
  const p = party(name);
  const m = await SignalClient.signalEncrypt(fromB64(plaintext, 'plaintext'), address(peer),
    p.sessions, p.identityStore);
  return { type: m.type(), body: b64(m.serialize()) };
}

async function decrypt({ name, peer, type, body }) {
  const p = party(name);
  const bytes = fromB64(body, 'body');
  let pt;
  if (type === CiphertextMessageType.PreKey) {
    pt = await SignalClient.signalDecryptPreKey(PreKeySignalMessage.deserialize(bytes),
      address(peer), p.sessions, p.identityStore, p.preKeys, p.signedPreKeys, p.kyberPreKeys);
  } else if (type === CiphertextMessageType.Whisper) {
    pt = await SignalClient.signalDecrypt(SignalMessage.deserialize(bytes), address(peer),
      p.sessions, p.identityStore);
  } else {
    throw new TypeError(`unsupported message type ${type}`);
  }
  return { plaintext: b64(pt) };
}

// inspect parses a message with libsignal's own decoders. A PreKey message's
// inner SignalMessage is not reachable through the Node API in 0.90.0, so
// only its outer fields are reported.
function inspect({ type, body }) {
  const bytes = fromB64(body, 'body');
  if (type === CiphertextMessageType.PreKey) {
    const m = PreKeySignalMessage.deserialize(bytes);
    return {
      version: m.version(), registrationId: m.registrationId(),
      preKeyId: m.preKeyId(), signedPreKeyId: m.signedPreKeyId(),
    };
  }
  if (type === CiphertextMessageType.Whisper) {
    const m = SignalMessage.deserialize(bytes);
    return { version: m.messageVersion(), counter: m.counter(), pqRatchetLen: m.pqRatchet().length };
  }
  throw new TypeError(`unsupported message type ${type}`);
}

function preKeyState({ name }) {
  const p = party(name);
  return { preKeyIds: [...p.preKeys.keys.keys()], kyberUsed: p.kyberPreKeys.used };
}

function fingerprint({ localId, localKey, remoteId, remoteKey, iterations = 5200, version = 2 }) {
  const f = Fingerprint.new(iterations, version,
    fromB64(localId, 'localId'), PublicKey.deserialize(fromB64(localKey, 'localKey')),
    fromB64(remoteId, 'remoteId'), PublicKey.deserialize(fromB64(remoteKey, 'remoteKey')));
  return {
    displayable: f.displayableFingerprint().toString(),
    scannable: b64(f.scannableFingerprint().toBuffer()),
  };
}

function sign({ privateKey, message }) {
  const k = PrivateKey.deserialize(fromB64(privateKey, 'privateKey'));
  return { signature: b64(k.sign(fromB64(message, 'message'))) };
}

function verify({ publicKey, message, signature }) {
  const k = PublicKey.deserialize(fromB64(publicKey, 'publicKey'));
  return { valid: k.verify(fromB64(message, 'message'), fromB64(signature, 'signature')) };
}

// The Node API of 0.90.0 exposes KEM key generation and (de)serialization
// only: there is no encapsulate or decapsulate. Those are exercised through
// PQXDH sessions instead.
function kemGenerate() {
  const kp = KEMKeyPair.generate();
  return { publicKey: b64(kp.getPublicKey().serialize()), secretKey: b64(kp.getSecretKey().serialize()) };
}

function kemCheck({ publicKey, secretKey }) {
  const out = {};
  if (publicKey !== undefined) out.publicKey = b64(KEMPublicKey.deserialize(fromB64(publicKey, 'publicKey')).serialize());
  if (secretKey !== undefined) out.secretKey = b64(KEMSecretKey.deserialize(fromB64(secretKey, 'secretKey')).serialize());
  return out;
}

// ---- sender keys ----

function selfAddress(p) { return ProtocolAddress.new(p.name, p.deviceId); }

function distributionId(id) {
  if (typeof id !== 'string') throw new TypeError('distributionId: expected a UUID string');
  return id;
}

async function skdmCreate({ name, distributionId: id }) {
  const p = party(name);
  const m = await SenderKeyDistributionMessage.create(selfAddress(p), distributionId(id), p.senderKeys);
  return { body: b64(m.serialize()) };
}

async function skdmProcess({ name, sender, body }) {
  const p = party(name);
  const m = SenderKeyDistributionMessage.deserialize(fromB64(body, 'body'));
  await SignalClient.processSenderKeyDistributionMessage(address(sender), m, p.senderKeys);
  return {};
}

function skdmInspect({ body }) {
  const m = SenderKeyDistributionMessage.deserialize(fromB64(body, 'body'));
  return {
    distributionId: m.distributionId(), chainId: m.chainId(), iteration: m.iteration(),
    chainKey: b64(m.chainKey()),
  };
}

function skdmNew({ distributionId: id, chainId, iteration, chainKey, signingKey }) {
  const m = SenderKeyDistributionMessage._new(3, distributionId(id), chainId, iteration,
    fromB64(chainKey, 'chainKey'), PublicKey.deserialize(fromB64(signingKey, 'signingKey')));
  return { body: b64(m.serialize()) };
}

async function groupEncrypt({ name, distributionId: id, plaintext }) {
  const p = party(name);
  const m = await SignalClient.groupEncrypt(selfAddress(p), distributionId(id), p.senderKeys,
    fromB64(plaintext, 'plaintext'));
  return { type: m.type(), body: b64(m.serialize()) };
}

async function groupDecrypt({ name, sender, body }) {
  const p = party(name);
  const pt = await SignalClient.groupDecrypt(address(sender), p.senderKeys, fromB64(body, 'body'));
  return { plaintext: b64(pt) };
}

function skmInspect({ body, signingKey }) {
  const m = SenderKeyMessage.deserialize(fromB64(body, 'body'));
  return {
    distributionId: m.distributionId(), chainId: m.chainId(), iteration: m.iteration(),
    ciphertext: b64(m.ciphertext()),
    signatureValid: signingKey === undefined ? null
      : m.verifySignature(PublicKey.deserialize(fromB64(signingKey, 'signingKey'))),
  };
}

function skmNew({ distributionId: id, chainId, iteration, ciphertext, privateKey }) {
  const m = SenderKeyMessage._new(3, distributionId(id), chainId, iteration,
    fromB64(ciphertext, 'ciphertext'), PrivateKey.deserialize(fromB64(privateKey, 'privateKey')));
  return { body: b64(m.serialize()) };
}

async function senderKeyRecord({ name, sender, distributionId: id }) {
  const r = await party(name).senderKeys.getSenderKey(address(sender), distributionId(id));
  return { record: r ? b64(r.serialize()) : null };
}

async function setSenderKeyRecord({ name, sender, distributionId: id, record }) {
  const r = SenderKeyRecord.deserialize(fromB64(record, 'record'));
  await party(name).senderKeys.saveSenderKey(address(sender), distributionId(id), r);
  return {};
}

const commands = {
  newParty,
  newPartyWithIdentity: (req) => {
    if (req.identityPrivate === undefined) throw new TypeError('identityPrivate required');
    return newParty(req);
  },
  bundle, processBundle, encrypt, decrypt, inspect, preKeyState,
  fingerprint, sign, verify, kemGenerate, kemCheck,
  skdmCreate, skdmProcess, skdmInspect, skdmNew, groupEncrypt, groupDecrypt, skmInspect, skmNew,
  senderKeyRecord, setSenderKeyRecord,
};

function errorKind(e) {
  if (e instanceof SignalClient.LibSignalErrorBase) {
    return e.code === ErrorCode.Generic ? 'LibSignalError' : ErrorCode[e.code];
  }
  return e?.name ?? 'Error';
}

// ---- main loop: strictly one request at a time, in order ----

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (line.trim() === '') continue;
  let id = null;
  let resp;
  try {
    const req = JSON.parse(line);
    id = req.id ?? null;
    const fn = Object.hasOwn(commands, req.cmd) ? commands[req.cmd] : undefined;
    if (!fn) throw new TypeError(`unknown command ${JSON.stringify(req.cmd)}`);
    resp = { id, ok: true, ...(await fn(req)) };
  } catch (e) {
    // libsignal's messages name addresses and failure reasons, never keys.
    resp = { id, ok: false, error: String(e?.message ?? e), kind: errorKind(e) };
  }
  process.stdout.write(JSON.stringify(resp) + '\n');
}
