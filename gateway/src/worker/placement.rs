//! Which worker holds which room and which participant.
//!
//! A room lives on one worker, its home, chosen when its first participant is seated: the worker
//! with the fewest participants then. A room with `spread_at` participants seated at home
//! spreads: its next participants are seated on other workers (those it is on already while they
//! hold fewer than `spread_at` of it, else the least loaded), each a satellite of the home
//! (`super::spread`). WHIP/WHEP peers are always seated at home.
//!
//! Every participant is seated on one worker too: one of its room's when its token names one
//! room (the usual case), the least loaded one otherwise (an admin token, whose room is known
//! only at its `Join`; the participant then moves to a worker of its room before it joins, see
//! [`Placement::join`]). A room's entry lives as long as one participant is seated in it, so a
//! room is never placed twice: its next participant finds it where its first ones are.
//!
//! The placement is shared by every session, the HTTP surface and every worker's driver (which
//! reports participants it let go of). It is consulted when a participant is seated, joins,
//! resumes or leaves — never per packet.

use std::collections::HashMap;
use std::sync::Mutex;

use strait_protocol::{ErrorCode, ParticipantId, RoomId};

/// Why a participant was not seated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PlacementError {
    /// The node holds `limits.max_rooms` rooms already.
    #[error("the node holds its maximum of {max} rooms")]
    TooManyRooms {
        /// The limit.
        max: usize,
    },
    /// The participant id is seated already (ids are drawn at random: a collision).
    #[error("the participant id is in use")]
    IdInUse,
    /// The participant's token names another room.
    #[error("the access token does not grant room `{0}`")]
    NotGranted(RoomId),
    /// A participant joins one room in its life; this one was placed in another (after a join
    /// that was refused).
    #[error("a participant joins one room: this one was placed in `{0}`")]
    OtherRoom(RoomId),
}

impl PlacementError {
    /// The error code a client is told.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            PlacementError::TooManyRooms { .. } => ErrorCode::LIMIT_EXCEEDED,
            PlacementError::IdInUse => ErrorCode::INTERNAL,
            PlacementError::NotGranted(_) => ErrorCode::FORBIDDEN,
            PlacementError::OtherRoom(_) => ErrorCode::INVALID_REQUEST,
        }
    }
}

/// Where a `Join` goes (see [`Placement::join`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JoinPlace {
    /// The worker the participant joins the room on.
    pub(crate) worker: usize,
    /// The room's home worker (`worker` itself unless the room spread).
    pub(crate) home: usize,
    /// The worker the participant is on now, when it must move first.
    pub(crate) moved_from: Option<usize>,
}

#[derive(Debug)]
struct RoomPlace {
    home: usize,
    /// Participants seated for the room (joined or about to join), per worker.
    seated: Vec<usize>,
    total: usize,
}

#[derive(Debug)]
struct Seat {
    worker: usize,
    room: Option<RoomId>,
    /// The room is the one the participant's token names.
    granted: bool,
}

#[derive(Debug, Default)]
struct Inner {
    rooms: HashMap<RoomId, RoomPlace>,
    seats: HashMap<ParticipantId, Seat>,
    /// Participants seated per worker.
    load: Vec<usize>,
}

/// Rooms and participants by worker (see the module docs).
#[derive(Debug)]
pub(crate) struct Placement {
    inner: Mutex<Inner>,
    max_rooms: usize,
    /// Participants of one room on its home worker beyond which the room spreads.
    spread_at: usize,
}

impl Placement {
    /// A placement over `workers` workers (at least 1) holding at most `max_rooms` rooms, which
    /// spread beyond `spread_at` participants on one worker.
    pub(crate) fn new(workers: usize, max_rooms: usize, spread_at: usize) -> Placement {
        Placement {
            inner: Mutex::new(Inner {
                load: vec![0; workers.max(1)],
                ..Inner::default()
            }),
            max_rooms,
            spread_at: spread_at.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state stays consistent across a panic: every change is a few plain writes.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seats a new participant: on a worker of `room` when its token names one room (placing the
    /// room if it is new), else on the least loaded worker. Returns the worker.
    pub(crate) fn seat(
        &self,
        participant: ParticipantId,
        room: Option<&RoomId>,
    ) -> Result<usize, PlacementError> {
        let mut inner = self.lock();
        if inner.seats.contains_key(&participant) {
            return Err(PlacementError::IdInUse);
        }
        let worker = match room {
            Some(room) => inner.place(room, self.max_rooms, self.spread_at, false)?.0,
            None => inner.least_loaded(),
        };
        inner.load[worker] += 1;
        inner.seats.insert(
            participant,
            Seat {
                worker,
                room: room.cloned(),
                granted: room.is_some(),
            },
        );
        Ok(worker)
    }

    /// Seats a WebRTC peer of `room` (WHIP/WHEP) on the room's home, whatever the room's
    /// spread: a bridge peer joins its room directly, without waiting for a satellite to learn
    /// the room. Returns the worker.
    pub(crate) fn seat_at_home(
        &self,
        participant: ParticipantId,
        room: &RoomId,
    ) -> Result<usize, PlacementError> {
        let mut inner = self.lock();
        if inner.seats.contains_key(&participant) {
            return Err(PlacementError::IdInUse);
        }
        let (worker, _) = inner.place(room, self.max_rooms, self.spread_at, true)?;
        inner.load[worker] += 1;
        inner.seats.insert(
            participant,
            Seat {
                worker,
                room: Some(room.clone()),
                granted: true,
            },
        );
        Ok(worker)
    }

    /// A seated participant asks to join `room`: where the `Join` goes. A participant seated
    /// without a room is placed in it now, and must move when the room lives elsewhere
    /// (`moved_from`). One seated for `room` stays where it is; one seated for another room is
    /// refused: its token names another room, or it was placed in another at an earlier `Join`
    /// that was refused (a participant joins one room in its life).
    pub(crate) fn join(
        &self,
        participant: ParticipantId,
        room: &RoomId,
    ) -> Result<JoinPlace, PlacementError> {
        let mut inner = self.lock();
        let Some(seat) = inner.seats.get(&participant) else {
            // Not seated (gone already): the worker it was on answers for it.
            return Ok(JoinPlace {
                worker: 0,
                home: 0,
                moved_from: None,
            });
        };
        let from = seat.worker;
        match &seat.room {
            Some(r) if r == room => {
                let home = inner.rooms.get(room).map_or(from, |p| p.home);
                return Ok(JoinPlace {
                    worker: from,
                    home,
                    moved_from: None,
                });
            }
            Some(_) if seat.granted => return Err(PlacementError::NotGranted(room.clone())),
            Some(other) => return Err(PlacementError::OtherRoom(other.clone())),
            None => {}
        }
        let (worker, home) = inner.place(room, self.max_rooms, self.spread_at, false)?;
        inner.load[from] -= 1;
        inner.load[worker] += 1;
        if let Some(seat) = inner.seats.get_mut(&participant) {
            seat.worker = worker;
            seat.room = Some(room.clone());
        }
        Ok(JoinPlace {
            worker,
            home,
            moved_from: (worker != from).then_some(from),
        })
    }

    /// The worker a participant is seated on.
    pub(crate) fn worker_of(&self, participant: ParticipantId) -> Option<usize> {
        self.lock().seats.get(&participant).map(|s| s.worker)
    }

    /// The home worker of `room`, if it is placed.
    pub(crate) fn room_worker(&self, room: &RoomId) -> Option<usize> {
        self.lock().rooms.get(room).map(|r| r.home)
    }

    /// The participant is gone (its worker let go of it); its room's entry goes with its last
    /// participant. Unknown participants are ignored.
    pub(crate) fn gone(&self, participant: ParticipantId) {
        let mut inner = self.lock();
        let Some(seat) = inner.seats.remove(&participant) else {
            return;
        };
        inner.load[seat.worker] -= 1;
        if let Some(room) = seat.room
            && let Some(place) = inner.rooms.get_mut(&room)
        {
            place.seated[seat.worker] -= 1;
            place.total -= 1;
            if place.total == 0 {
                inner.rooms.remove(&room);
            }
        }
    }

    /// Participants seated per worker, and rooms placed per worker.
    #[cfg(test)]
    fn load(&self) -> (Vec<usize>, Vec<usize>) {
        let inner = self.lock();
        let mut rooms = vec![0; inner.load.len()];
        for place in inner.rooms.values() {
            for (worker, seated) in place.seated.iter().enumerate() {
                if *seated > 0 {
                    rooms[worker] += 1;
                }
            }
        }
        (inner.load.clone(), rooms)
    }
}

impl Inner {
    /// Seats one more participant in `room`: on its home while the home holds fewer than
    /// `spread_at` of it, else on a satellite — a worker that holds some of it and fewer than
    /// `spread_at`, else the least loaded of the others. A new room gets the least loaded worker
    /// as its home. Returns the worker and the room's home.
    fn place(
        &mut self,
        room: &RoomId,
        max_rooms: usize,
        spread_at: usize,
        at_home: bool,
    ) -> Result<(usize, usize), PlacementError> {
        let workers = self.load.len();
        if let Some(place) = self.rooms.get(room) {
            let home = place.home;
            let worker = if at_home || place.seated[home] < spread_at {
                home
            } else if let Some(satellite) =
                (0..workers).find(|&w| place.seated[w] > 0 && place.seated[w] < spread_at)
            {
                satellite
            } else {
                (0..workers)
                    .filter(|&w| place.seated[w] == 0)
                    .min_by_key(|&w| (self.load[w], w))
                    // Every worker holds `spread_at` of the room: the home takes more.
                    .unwrap_or(home)
            };
            if let Some(place) = self.rooms.get_mut(room) {
                place.seated[worker] += 1;
                place.total += 1;
            }
            return Ok((worker, home));
        }
        if self.rooms.len() >= max_rooms {
            return Err(PlacementError::TooManyRooms { max: max_rooms });
        }
        let home = self.least_loaded();
        let mut seated = vec![0; workers];
        seated[home] = 1;
        self.rooms.insert(
            room.clone(),
            RoomPlace {
                home,
                seated,
                total: 1,
            },
        );
        Ok((home, home))
    }

    /// The worker with the fewest participants (the lowest index among equals).
    fn least_loaded(&self) -> usize {
        self.load
            .iter()
            .enumerate()
            .min_by_key(|(i, load)| (**load, *i))
            .map_or(0, |(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomId {
        RoomId(name.into())
    }

    #[test]
    fn a_new_room_goes_to_the_least_loaded_worker_and_its_participants_follow() {
        let placement = Placement::new(2, 10, 100);
        assert_eq!(placement.seat(ParticipantId(1), Some(&room("a"))), Ok(0));
        assert_eq!(placement.seat(ParticipantId(2), Some(&room("a"))), Ok(0));
        assert_eq!(placement.seat(ParticipantId(3), Some(&room("b"))), Ok(1));
        assert_eq!(placement.seat(ParticipantId(4), Some(&room("c"))), Ok(1));
        assert_eq!(placement.seat(ParticipantId(5), Some(&room("b"))), Ok(1));
        assert_eq!(placement.load(), (vec![2, 3], vec![1, 2]));
    }

    #[test]
    fn a_room_is_let_go_with_its_last_participant_and_may_then_move() {
        let placement = Placement::new(2, 10, 100);
        placement.seat(ParticipantId(1), Some(&room("a"))).unwrap();
        placement.seat(ParticipantId(2), Some(&room("b"))).unwrap();
        placement.seat(ParticipantId(3), Some(&room("b"))).unwrap();
        placement.gone(ParticipantId(1));
        assert_eq!(placement.room_worker(&room("a")), None);
        // Worker 0 is empty now: a room placed anew goes there.
        assert_eq!(placement.seat(ParticipantId(4), Some(&room("c"))), Ok(0));
        placement.gone(ParticipantId(2));
        assert_eq!(placement.room_worker(&room("b")), Some(1));
        // Gone twice changes nothing.
        placement.gone(ParticipantId(2));
        assert_eq!(placement.load(), (vec![1, 1], vec![1, 1]));
    }

    #[test]
    fn a_participant_seated_without_a_room_moves_to_its_rooms_worker_at_its_join() {
        let placement = Placement::new(2, 10, 100);
        placement.seat(ParticipantId(1), Some(&room("a"))).unwrap();
        // An admin token: seated on the least loaded worker, 1.
        assert_eq!(placement.seat(ParticipantId(2), None), Ok(1));
        assert_eq!(
            placement.join(ParticipantId(2), &room("a")),
            Ok(JoinPlace {
                worker: 0,
                home: 0,
                moved_from: Some(1)
            })
        );
        assert_eq!(placement.worker_of(ParticipantId(2)), Some(0));
        // Joining again (after a refused join) stays; another room is refused.
        assert_eq!(
            placement.join(ParticipantId(2), &room("a")),
            Ok(JoinPlace {
                worker: 0,
                home: 0,
                moved_from: None
            })
        );
        assert_eq!(
            placement.join(ParticipantId(2), &room("b")),
            Err(PlacementError::OtherRoom(room("a")))
        );
        assert_eq!(
            placement.join(ParticipantId(1), &room("b")),
            Err(PlacementError::NotGranted(room("b")))
        );
        assert_eq!(placement.load(), (vec![2, 0], vec![1, 0]));
    }

    #[test]
    fn a_room_beyond_spread_at_on_its_home_fills_a_satellite_then_another() {
        let placement = Placement::new(3, 10, 2);
        let big = room("big");
        let seats: Vec<usize> = (1..=7)
            .map(|p| placement.seat(ParticipantId(p), Some(&big)).unwrap())
            .collect();
        // Home 0 takes two; satellite 1 two; satellite 2 two; then the home again.
        assert_eq!(seats, [0, 0, 1, 1, 2, 2, 0]);
        assert_eq!(placement.room_worker(&big), Some(0));
        // A seat freed on a satellite is filled before anything else.
        placement.gone(ParticipantId(3));
        assert_eq!(placement.seat(ParticipantId(8), Some(&big)), Ok(1));
        assert_eq!(placement.load(), (vec![3, 2, 2], vec![1, 1, 1]));
        // The room's entry goes with its last participant, wherever it is.
        for p in [1, 2, 4, 5, 6, 7, 8] {
            placement.gone(ParticipantId(p));
        }
        assert_eq!(placement.room_worker(&big), None);
    }

    #[test]
    fn rooms_beyond_the_limit_and_reused_ids_are_refused() {
        let placement = Placement::new(1, 1, 100);
        placement.seat(ParticipantId(1), Some(&room("a"))).unwrap();
        assert_eq!(
            placement.seat(ParticipantId(2), Some(&room("b"))),
            Err(PlacementError::TooManyRooms { max: 1 })
        );
        assert_eq!(
            placement.seat(ParticipantId(1), Some(&room("a"))),
            Err(PlacementError::IdInUse)
        );
        assert_eq!(placement.load(), (vec![1], vec![1]));
    }
}
