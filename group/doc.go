// Package group is the membership of a Magpie group: who is in it, with
// which role and identity key, its name, description and avatar, its
// settings and its join link. The state is a hash-chained log of changes,
// each signed by the identity key of a member whose role allows it. The
// server stores and orders the log and uses it for fan-out, but it holds
// no member's private key, so it cannot add, remove or promote anyone: every
// client replays and verifies the log, and reaches the same state from the
// same log. This package is the logic both sides run (formats, signing,
// verification, the state machine) and does no I/O.
//
// # Trust
//
// Members carry their identity key (the 33-byte curve serialization) as
// the log attests it: the creator lists the first members with their keys
// in the Create, whoever adds a member attests that member's key in the
// Add, and a joiner states their own key in the Join. Every later change
// is verified with the key the state holds for its author, so the chain of
// trust starts at the Create and needs nothing outside the log. Replay
// checks the Create's key against the creator's key when the caller knows
// it; given nil it trusts the Create's own key (trust on first use).
//
// A key in the log is only as good as whoever attested it. A member who
// adds someone attests a key, as any client fetching a key for a session
// does; a joiner attests their own. Clients compare the group's key for a
// user with the key they hold for that user, and warn on a difference, as
// they do for safety numbers.
//
// # Roles and rules
//
// Roles are ordered owner > admin > member, and a group has exactly one
// owner while it has members. "Outranks" below means a strictly higher
// role. A change that names a user is refused when that user is in the
// wrong place (ErrNotMember, ErrNoChange), and a change that would change
// nothing (the same role, the same key, the same info) is refused with
// ErrNoChange, so that a proposer who lost a race learns there is nothing
// left to do.
//
//	change                   who may make it                     conditions
//	-----------------------  ----------------------------------  ---------------------------------------------
//	Create (seq 0)           anyone; becomes the owner           up to 1,023 other members, each a member or
//	                                                             an admin, with keys the creator attests
//	Add (a new member)       an admin or the owner               the group has fewer than 1,024 members;
//	                                                             the new member's pending request is dropped
//	Add (a member, new key)  the member themself, or an admin    the key differs; the role is kept; so the
//	                         or owner who outranks them          owner's key changes only by the owner
//	Remove                   an admin or owner who outranks      not oneself (Leave instead); so nobody
//	                         the member                          removes the owner, only the owner an admin
//	SetRole admin (promote)  an admin or the owner               the user is a member
//	SetRole member (demote)  the owner                           the user is an admin
//	SetRole owner (transfer) the owner                           the user is a member or an admin; the old
//	                                                             owner becomes an admin
//	Leave                    any member                          the owner only as the last member; the
//	                                                             group has then ended and accepts nothing
//	SetInfo                  any member; only an admin or the    name at most 64 bytes of UTF-8 without
//	                         owner when admins_only_edit_info    control characters, description at most
//	                                                             1,024, avatar at most 2,048 bytes
//	SetSettings              an admin or the owner               disappearing at most 365 days, in seconds
//	SetLink                  an admin or the owner               a new link, or links off, drops every
//	                                                             pending request; approval alone keeps them
//	Join                     anyone holding the link: signed     links are on; the joiner is not a member;
//	                         by the joiner's key and the link's  with approval: a pending request (at most
//	                                                             1,024), else a member (at most 1,024)
//	Approve                  an admin or the owner               the user's request is pending; fewer than
//	                                                             1,024 members
//	Deny                     an admin or the owner               the user's request is pending
//
// Nobody removes or demotes the owner: ownership only moves by the owner's
// SetRole. An owner who loses their identity key cannot be re-keyed by
// anyone else (that would let an admin take the group over), so owners
// transfer ownership before they change phones.
//
// Sending: any member may send, unless settings.admins_only_send, when
// only admins and the owner may (State.CanSend). Clients enforce it when
// they receive; the server may too.
//
// # Joining by link
//
// An admin turns links on with SetLink, which puts the link's public key
// in the log. The link a member shares (LinkSecret, in text by
// LinkSecret.Encode) holds the group id and the link's private key, which
// the server never sees. A Join is signed by the joiner's identity key and
// by the link's key: anyone holding the link can join, the server cannot.
// The Join binds the group, seq and head, so it cannot be replayed. With
// approval on, a Join makes a pending request, which an admin approves or
// denies; a pending requester who joins again once approval is off becomes
// a member. Changing the link or turning it off drops pending requests:
// they were made with a link the admins no longer trust, and it is how a
// flood of requests from a leaked link is cleared in one change. Removing
// someone does not bar them: if they hold the link, reset it.
//
// # Formats
//
// A log entry is a serialized WireSignedChange (group.proto) in canonical
// encoding, at most MaxChangeSize bytes: the serialized WireChange exactly
// as signed, the author's 64-byte XEdDSA signature over
// "magpie group change v1\x00" || change, and for a Join only the link's
// signature over the same bytes. The prefix keeps these signatures apart
// from every other use of an identity key (signed pre-keys sign a 33-byte
// key that starts with 0x05). WireChange holds the group id (16 bytes), seq
// (0 for the Create), prev (the SHA-256 of the previous entry's bytes, so
// the state's Head; empty at seq 0), the author's username, the author's
// clock in Unix ms, and one action. Verification always uses the carried
// bytes, never a re-encoding. Decoders refuse unknown fields, so a change
// made by a newer version is refused, never half understood.
//
// State.MarshalBinary is a WireState, for a client or server to persist a
// state instead of replaying the log; UnmarshalBinary checks every bound
// and invariant.
//
// # Order
//
// The server is the order. When two admins propose on the same head, the
// server applies the first; the second fails to apply with ErrOutOfOrder,
// and its author proposes again on the new head if the change is still
// allowed and still needed.
package group
